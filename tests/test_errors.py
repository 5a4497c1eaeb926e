import errno

import pytest

from web10g import errors


@pytest.mark.parametrize("err, cls", [
    (errno.EACCES, PermissionError),
    (errno.EPERM, PermissionError),
    (errno.ENOENT, FileNotFoundError),
    (errno.EINTR, errors.DumpInterrupted),
    (errno.ENOBUFS, errors.ReceiveOverrun),
    (errno.EAGAIN, errors.KernelTimeout),
    (errno.EINVAL, OSError),
    (errno.EBADMSG, errors.MalformedReply),
])
def test_errno_maps_to_the_fitting_class(err, cls):
    exc = errors.from_errno(err, "some call")
    assert isinstance(exc, cls)
    assert "some call failed" in str(exc)
    assert errno.errorcode[err] in str(exc)


def test_negative_errno_is_accepted():
    exc = errors.from_errno(-errno.EACCES, "read")
    assert isinstance(exc, PermissionError) and exc.errno == errno.EACCES


def test_missing_capability_is_named():
    exc = errors.from_errno(errno.EPERM, "SOCK_DESTROY", capability="CAP_NET_ADMIN")
    assert isinstance(exc, errors.MissingCapability)
    assert isinstance(exc, PermissionError)
    assert "CAP_NET_ADMIN" in str(exc) and "SOCK_DESTROY" in str(exc)


def test_detail_and_hint_are_in_the_message():
    exc = errors.from_errno(errno.EINVAL, "dump", detail="bad bytecode", hint="fix the filter")
    assert "bad bytecode" in str(exc) and "fix the filter" in str(exc)


def test_domain_classes_share_a_base():
    for cls in (errors.FamilyNotFound, errors.DumpInterrupted, errors.ReceiveOverrun,
                errors.MalformedReply, errors.FlowNotFound, errors.MissingCapability,
                errors.KernelTimeout):
        assert issubclass(cls, errors.Web10GError)


def test_a_long_filter_is_shown_as_a_window_around_the_error() -> None:
    from web10g import filter as wfilter
    text = "(" * 5000
    with pytest.raises(errors.FilterError) as info:
        wfilter.compile(text)
    lines = str(info.value).splitlines()
    pos = info.value.position
    assert pos is not None and len(lines) == 3 and len(lines[1]) < 140  # not 5,000 chars
    assert lines[1].startswith("  ...(") and lines[1].endswith("(...")
    assert lines[2].index("^") == lines[1].index("(") + pos - (pos - 60)
    short = errors.FilterError("bad value", "dport = :x", 9)
    assert str(short).splitlines()[1:] == ["  dport = :x", "           ^"]
