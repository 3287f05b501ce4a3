"""The canary scan itself must be able to fail."""

from tests.secret_canaries import SecretCanaries


def test_a_registered_secret_in_captured_output_is_reported() -> None:
    scan = SecretCanaries()
    scan.register("CanaryPw-0123456789abcdef")
    scan.scan(
        "tests/x.py::test_y", [("Captured log call", "ok"), ("Captured stdout call", "pw CanaryPw-0123456789abcdef")]
    )
    assert len(scan.leaks) == 1
    assert "Captured stdout call" in scan.leaks[0]
    assert "0123456789abcdef" not in scan.leaks[0]


def test_short_values_are_not_canaries() -> None:
    scan = SecretCanaries()
    scan.register("abc")
    scan.scan("t", [("Captured log call", "abc")])
    assert scan.leaks == []
