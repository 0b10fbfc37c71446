import pytest

from kmod.build import diagnose

LOGS = {
    "float-x86": "/kmod/build/m.c:10:8: error: SSE register return with SSE disabled\n",
    "float-arm64": "m.c:3:1: error: '-mgeneral-regs-only' is incompatible with the use of floating-point types\n".replace("'", ""),
    "fault-handler-removed": "m.c:99:12: error: 'struct kprobe' has no member named 'fault_handler'; did you mean 'post_handler'?\n",
    "gpl-only-symbol": "ERROR: modpost: GPL-incompatible module m.ko uses GPL-only symbol 'register_kprobe'\n",
    "license-missing": "ERROR: modpost: missing MODULE_LICENSE() in /kmod/build/m.o\n",
    "undefined-symbol": 'ERROR: modpost: "__adddf3" [/kmod/build/m.ko] undefined!\n',
    "implicit-declaration": "m.c:5:2: error: implicit declaration of function 'get_fs' [-Werror=implicit-function-declaration]\n",
}


@pytest.mark.parametrize("cause", sorted(LOGS))
def test_known_causes(cause):
    found = diagnose.diagnose("make: Entering directory\n" + LOGS[cause] + "make: *** Error 2\n")
    assert [d.cause for d in found] == [cause]
    assert found[0].advice and "{1}" not in found[0].advice


def test_groups_fill_advice():
    (d,) = diagnose.diagnose(LOGS["gpl-only-symbol"])
    assert d.advice.startswith("register_kprobe is exported GPL-only")


def test_relevant_lines_are_few():
    log = "noise\n" * 500 + LOGS["fault-handler-removed"] + "make[1]: *** [x] Error 1\n" * 20
    lines = diagnose.relevant_lines(log)
    assert lines[0].startswith("m.c:99:12: error") and len(lines) <= diagnose.MAX_LINES
