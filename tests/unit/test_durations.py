import pytest

from schemas import durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h30m", 5400), ("8760h", 8760 * 3600), ("1.5h", 5400), ("-15m", -900),
    ("500ms", 0.5), ("0", 0), (" 2h ", 7200), ("1h0m5s", 3605),
])
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert durations.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "1d", "h", "1h 30m", "m15", "1.2.3s", "--1s"])
def test_what_is_not_a_duration_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        durations.parse(text)


@pytest.mark.parametrize(("seconds", "text"), [(31536000, "8760h"), (5400, "1h30m"), (45, "45s"), (0, "0s"),
                                               (-900, "-15m")])
def test_format_is_the_inverse_for_whole_seconds(seconds: int, text: str) -> None:
    assert durations.format_seconds(seconds) == text
    assert durations.parse(text) == seconds
