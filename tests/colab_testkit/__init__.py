"""The project's test kit: the emulated AWS account, podman test hosts, the ansible-playbook runner
and a headless Chromium at Colab's origin.

Shared by the pytest suites (tests/), the benchmarks (bench/) and `make demo` (scripts/demo.py).
`make venv` installs it into .venv in editable mode (pyproject.toml), together with the Colab
protocol client of roles/colab_tunnel/module_utils, so every one of them imports the same files.
"""
