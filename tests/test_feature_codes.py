"""Feature codes of both seed profiles."""

import pytest

from divert.feature_codes import parse


@pytest.mark.parametrize(
    ("dialled", "profile", "expected"),
    [
        ("*72+393351112233", "vpbx", ("set", "always", "+393351112233")),
        ("*720791231212", "vpbx", ("set", "always", "0791231212")),
        ("*73", "vpbx", ("cancel-all", None, None)),
        ("*90+393351112233", "vpbx", ("set", "busy", "+393351112233")),
        ("*91", "vpbx", ("cancel", "busy", None)),
        ("*52+393351112233", "vpbx", ("set", "not-registered", "+393351112233")),
        ("*53", "vpbx", ("cancel", "not-registered", None)),
        ("*100393381258456", "carrier", ("set", "always", "00393381258456")),
        ("*2", "carrier", ("cancel-all", None, None)),
        ("*72+393351112233", "both", ("set", "always", "+393351112233")),
        ("*2", "both", ("cancel-all", None, None)),
        ("*72", "vpbx", ("set", "always", "")),  # its number missing: the caller is told
        ("*78", "carrier", ("away", None, None)),
        ("*79", "vpbx", ("present", None, None)),
        ("*11", "both", ("toggle-mode", None, None)),
    ],
)
def test_codes_of_each_profile(dialled, profile, expected):
    request = parse(dialled, profile)
    assert request is not None
    assert (request.code.action, request.code.condition, request.number) == expected


@pytest.mark.parametrize(
    ("dialled", "profile"),
    [
        ("*72+393351112233", "carrier"),  # a vpbx code under the carrier profile
        ("*1+393351112233", "vpbx"),
        ("*730", "vpbx"),  # a code that takes no number, with one
        ("*99", "both"),
        ("*72+39", "nonsense"),
    ],
)
def test_what_is_not_a_code(dialled, profile):
    assert parse(dialled, profile) is None
