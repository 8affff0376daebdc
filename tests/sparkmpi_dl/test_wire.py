"""PMI wire formats, process mapping and the join handshake's MAC: pure functions."""
import pytest

from sparkmpi_dl.pmi.auth import Hello, mac, mac_matches
from sparkmpi_dl.pmi.mapping import local_ranks, process_mapping
from sparkmpi_dl.pmi.wire import WireError, format_v1, format_v2, parse_v1, parse_v2_body


def test_v1_round_trip_with_spaces_and_backslashes():
    data = format_v1("abort", {"exitcode": 3, "message": r"bad thing \ here"})
    msg = parse_v1(data.decode())
    assert msg.cmd == "abort"
    assert msg.attrs == {"exitcode": "3", "message": r"bad thing \ here"}


def test_v1_parses_what_mpich_sends():
    msg = parse_v1("cmd=put kvsname=kvs_1 key=hostname[0] value=node1\n")
    assert msg.cmd == "put" and msg.require("key") == "hostname[0]"
    assert parse_v1("cmd=barrier_in\n").attrs == {}


@pytest.mark.parametrize("line", ["hello world", "cmd= x=1", "cmd=put [bad=1", ""])
def test_v1_rejects_malformed_lines(line):
    with pytest.raises(WireError):
        parse_v1(line)


def test_v2_frame_has_space_padded_length():
    frame = format_v2("kvs-put", {"key": "k", "value": "v"})
    body = b"cmd=kvs-put;key=k;value=v;"
    assert frame == b"%6d" % len(body) + body and frame[:4] == b"    "
    msg = parse_v2_body(frame[6:].decode())
    assert msg.cmd == "kvs-put" and msg.attrs == {"key": "k", "value": "v"}


def test_require_int_names_the_attribute():
    with pytest.raises(WireError, match="pmiid"):
        parse_v1("cmd=initack pmiid=x").require_int("pmiid")


@pytest.mark.parametrize("hosts, expected", [
    (["a"], "(vector,(0,1,1))"),
    (["a", "a", "a", "a"], "(vector,(0,1,4))"),
    (["a", "a", "b", "b"], "(vector,(0,2,2))"),
    (["a", "b", "a", "b"], "(vector,(0,2,1),(0,2,1))"),
    (["a", "a", "b"], "(vector,(0,1,2),(1,1,1))"),
])
def test_process_mapping(hosts, expected):
    assert process_mapping(hosts) == expected


def test_local_ranks_follow_hosts():
    assert local_ranks(["a", "b", "a", "b", "a"]) == [(0, 3), (0, 2), (1, 3), (1, 2), (2, 3)]


def test_mac_binds_every_hello_field():
    hello = Hello("job", 0, 1, "pmi", "h")
    good = mac("s3cret", "nonce", hello)
    assert mac_matches("s3cret", "nonce", hello, good)
    assert not mac_matches("other", "nonce", hello, good)
    assert not mac_matches("s3cret", "nonce2", hello, good)
    assert not mac_matches("s3cret", "nonce", Hello("job", 0, 2, "pmi", "h"), good)
    assert not mac_matches("s3cret", "nonce", Hello("job", 0, 1, "ctl", "h"), good)


@pytest.mark.parametrize("presented", ["\u00e9t\u00e9", "\udcff", "", "x" * 5000])
def test_any_presented_mac_text_is_just_wrong_never_an_error(presented):
    """compare_digest raises TypeError on non-ASCII str; the service must refuse, not crash."""
    assert mac_matches("s3cret", "nonce", Hello("job", 0, 1, "pmi", "h"), presented) is False
