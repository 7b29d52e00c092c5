"""Gemma prompt rendering, request checks and stop-string matching (pure functions)."""

from __future__ import annotations

import pytest

from serving.engines.base import EngineError, EngineRequest
from serving.engines.prompt import StopMatcher, check_fits, render_gemma, validate_request


def test_single_user_turn_ends_with_open_model_turn() -> None:
    assert render_gemma((("user", "Hi there"),)) == (
        "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    )


def test_assistant_becomes_model_and_turns_keep_their_order() -> None:
    prompt = render_gemma((("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye")))
    assert prompt == (
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_system_text_is_folded_into_the_first_user_turn() -> None:
    prompt = render_gemma((("system", "Be brief."), ("system", "Use English."), ("user", " Why? ")))
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\nUse English.\n\nWhy?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "system" not in prompt


def test_system_text_without_a_leading_user_turn_becomes_its_own_user_turn() -> None:
    assert render_gemma((("system", "Be brief."),)) == (
        "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"
    )
    prompt = render_gemma((("system", "S"), ("assistant", "A"), ("user", "U")))
    assert prompt.startswith(
        "<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
    )


def test_unknown_role_and_empty_messages_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"^messages\[1\]\.role: unknown role 'tool'"):
        render_gemma((("user", "a"), ("tool", "b")))
    with pytest.raises(ValueError, match="^messages: must not be empty"):
        render_gemma(())


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (EngineRequest("r", (), 8), "messages: must not be empty"),
        (EngineRequest("r", (("user", "x"),), 0), "max_output_tokens: must be > 0"),
        (EngineRequest("r", (("user", "x"),), -3), "max_output_tokens: must be > 0"),
        (EngineRequest("r", (("bot", "x"),), 8), "messages[0].role: unknown role 'bot'"),
        (
            EngineRequest("r", (("user", "x"),), 8, temperature=-1.0),
            "sampling.temperature: must be >= 0",
        ),
        (EngineRequest("r", (("user", "x"),), 8, top_p=0.0), "sampling.top_p: must be in (0, 1]"),
    ],
)
def test_validate_request_rejects_bad_fields_as_invalid(
    request_: EngineRequest, message: str
) -> None:
    with pytest.raises(EngineError) as caught:
        validate_request(request_)
    assert caught.value.error_class == "invalid"
    assert str(caught.value).startswith(message)


def test_check_fits_allows_an_exact_fit_and_rejects_one_token_more() -> None:
    check_fits(100, 28, 128)
    with pytest.raises(EngineError) as caught:
        check_fits(101, 28, 128)
    assert caught.value.error_class == "too_large"
    assert "101" in str(caught.value) and "128" in str(caught.value)


def test_stop_matcher_holds_a_partial_match_back_until_decided() -> None:
    matcher = StopMatcher(("<end>",))
    assert matcher.feed("hello <e") == ("hello ", False)
    assert matcher.feed("nd> more") == ("", True)


def test_stop_matcher_releases_held_text_that_did_not_match() -> None:
    matcher = StopMatcher(("<end>",))
    assert matcher.feed("a <en") == ("a ", False)
    assert matcher.feed("tire") == ("<entire", False)
    assert matcher.feed(" <") == (" ", False)
    assert matcher.flush() == "<"
    assert matcher.flush() == ""


def test_stop_matcher_stops_at_the_earliest_of_several_stops() -> None:
    matcher = StopMatcher(("STOP", "x"))
    assert matcher.feed("abc x def STOP") == ("abc ", True)


def test_stop_matcher_without_stops_passes_text_through() -> None:
    matcher = StopMatcher(("",))
    assert matcher.feed("<end") == ("<end", False)
    assert matcher.flush() == ""
