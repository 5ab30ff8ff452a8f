"""Devices listed by a real child process (``superresmoe info --json``), never
by importing torch in the calling (GUI) process; failures give the CPU and a reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from SuperResMoELib.slicer.device_probe import DeviceList, DeviceProbe, parse_info


def test_probe_lists_the_devices_without_importing_torch_here() -> None:
    code = textwrap.dedent("""
        import sys
        from SuperResMoELib.slicer.device_probe import DeviceProbe
        devices = DeviceProbe(python=sys.executable).start().wait(timeout=120)
        assert "torch" not in sys.modules, "torch was imported by the caller"
        print(devices.choices()[-1], devices.torch_version, devices.warning)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("('cpu', 'cpu')") and "None" == out.stdout.split()[-1]
    import torch

    assert torch.__version__ in out.stdout  # the child's torch: the same environment


def test_result_is_none_while_running_then_a_list() -> None:
    probe = DeviceProbe(python=sys.executable).start()
    first = probe.result()
    devices = probe.wait(timeout=120)
    assert first is None or first is devices
    assert devices.devices[-1].name == "cpu" and probe.result() is devices


def test_failures_fall_back_to_the_cpu_with_a_reason(tmp_path) -> None:
    broken = tmp_path / "broken_python"
    broken.write_text("#!/bin/sh\necho 'OSError: libcudart.so.12: cannot open shared object file' >&2\nexit 1\n")
    broken.chmod(0o755)
    devices = DeviceProbe(python=str(broken)).start().wait(timeout=60)
    assert devices.choices() == [("cpu", "cpu")] and "libcudart" in devices.warning
    missing = DeviceProbe(python=str(tmp_path / "no_such_python")).start().wait(timeout=60)
    assert missing.choices() == [("cpu", "cpu")] and "could not be started" in missing.warning
    no_torch = parse_info("", 1, "Traceback...\nModuleNotFoundError: No module named 'torch'\n")
    assert "not installed yet" in no_torch.warning
    assert parse_info("not json", 0).warning and parse_info("not json", 0).devices == DeviceList().devices


def test_small_gpus_are_marked() -> None:
    info = ('{"torch": "2.13", "devices": [{"name": "cuda:0", "label": "cuda:0 - Tiny (2.0 GiB)", "small": true, '
            '"memory_bytes": 2147483648}, {"name": "cpu", "label": "cpu", "small": false, "memory_bytes": null}]}')
    devices = parse_info(info, 0)
    assert devices.choices()[0][1].endswith("(small: may run out of memory)") and devices.get("cuda:0").small
    assert devices.get("cuda:7") is None and devices.warning is None
