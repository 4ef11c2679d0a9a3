#!/bin/sh
# Runs as root right before the Colab runtime starts (ExecStartPre=+ of its unit).
#
# CUDA creates missing /dev/nvidia* nodes lazily through the setuid nvidia-modprobe, which the
# unit's NoNewPrivileges= disables for the notebook kernels; after a reboot nothing else may
# create /dev/nvidia-uvm* (NVIDIA's RHEL/Amazon Linux packages rely on that lazy path), and
# torch.cuda.is_available() is then False in every notebook. So: load the driver's modules and
# create the nodes here, while still root. A host without an NVIDIA driver is skipped (exit 0).
set -u
# Fixed PATH: the unit's PATH starts with the kernel environment, which the service user writes.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

if [ ! -d /proc/driver/nvidia ] && command -v modprobe >/dev/null 2>&1; then
    modprobe -q nvidia 2>/dev/null
fi
if [ ! -d /proc/driver/nvidia ]; then
    echo "gpu-device-nodes: no NVIDIA driver loaded, nothing to do"
    exit 0
fi

gpus=$(ls -d /proc/driver/nvidia/gpus/*/ 2>/dev/null | wc -l)
if command -v nvidia-modprobe >/dev/null 2>&1; then
    # -u: nvidia-uvm and /dev/nvidia-uvm*; -c N: /dev/nvidiactl and /dev/nvidiaN.
    nvidia-modprobe -u -c 0 || echo "gpu-device-nodes: nvidia-modprobe -u failed" >&2
    i=1
    while [ "$i" -lt "$gpus" ]; do
        nvidia-modprobe -c "$i" || echo "gpu-device-nodes: nvidia-modprobe -c $i failed" >&2
        i=$((i + 1))
    done
else
    # Debian ships no nvidia-modprobe: load the module and make the nodes from /proc/devices.
    modprobe -q nvidia-uvm || echo "gpu-device-nodes: modprobe nvidia-uvm failed" >&2
    major=$(awk '$2 == "nvidia-uvm" { print $1 }' /proc/devices)
    if [ -n "$major" ]; then
        [ -c /dev/nvidia-uvm ] || mknod -m 0666 /dev/nvidia-uvm c "$major" 0
        [ -c /dev/nvidia-uvm-tools ] || mknod -m 0666 /dev/nvidia-uvm-tools c "$major" 1
    fi
    major=$(awk '$2 == "nvidia-frontend" || $2 == "nvidia" { print $1; exit }' /proc/devices)
    if [ -n "$major" ]; then
        [ -c /dev/nvidiactl ] || mknod -m 0666 /dev/nvidiactl c "$major" 255
        i=0
        while [ "$i" -lt "$gpus" ]; do
            [ -c "/dev/nvidia$i" ] || mknod -m 0666 "/dev/nvidia$i" c "$major" "$i"
            i=$((i + 1))
        done
    fi
fi

if [ -c /dev/nvidia-uvm ]; then
    echo "gpu-device-nodes: $(ls /dev/nvidia* | tr '\n' ' ')"
else
    # The runtime still starts (CPU work goes on); the GPU proof from a cell says why it sees none.
    echo "gpu-device-nodes: /dev/nvidia-uvm is missing after loading nvidia-uvm; see dmesg" >&2
fi
exit 0
