"""The project's test kit: the emulated AWS account, podman test hosts, the ansible-playbook runner
and a headless Chromium at Colab's origin.

Shared by the pytest suites (tests/), the benchmarks (bench/) and `make demo` (scripts/demo.py):

- substrate: moto, test hosts, the runner, inventory overlays, EmulatedSite (site.yml with test
  hosts as the instances) and AwsCallLog (every AWS call of a run, counted)
- provisioning: the provision and teardown playbooks against moto, as the e2e tests run them
- runtime_host: a host converged with colab_runtime alone, and an ``ssh -L`` forward to it
- relay: the delaying TCP relay (an emulated network); browser: Chromium at Colab's origin;
  tls: self-signed certificates; molecule: helpers of the Molecule verifiers

Test files import from here, never from each other (tests/unit/test_colab_testkit.py checks it).
`make venv` installs it into .venv in editable mode (pyproject.toml), together with the Colab
protocol client of roles/colab_tunnel/module_utils, so every one of them imports the same files.
"""
