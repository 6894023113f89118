"""The run state machine (pure): which state may follow which."""

from __future__ import annotations

import itertools

import pytest

from skylane.errors import IllegalTransition
from skylane.models import ALLOWED_TRANSITIONS, TERMINAL_STATES, RunState, check_transition

ALLOWED_PAIRS = sorted(
    (current, target) for current, targets in ALLOWED_TRANSITIONS.items() for target in targets
)
FORBIDDEN_PAIRS = sorted(
    (current, target)
    for current, target in itertools.product(RunState, RunState)
    if target not in ALLOWED_TRANSITIONS[current]
)


def _ids(pair: tuple[RunState, RunState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_every_state_has_an_entry() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(RunState)


def test_the_documented_transitions_are_allowed() -> None:
    # DESIGN.md: SCHEDULED -> PENDING -> RUNNING -> COMPLETED | FAILED | CRASHED, and
    # CANCELLING -> CANCELLED from any non-terminal state.
    assert RunState.PENDING in ALLOWED_TRANSITIONS[RunState.SCHEDULED]
    assert RunState.RUNNING in ALLOWED_TRANSITIONS[RunState.PENDING]
    for end in (RunState.COMPLETED, RunState.FAILED, RunState.CRASHED):
        assert end in ALLOWED_TRANSITIONS[RunState.RUNNING]
    for state in RunState:
        if not state.is_terminal and state != RunState.CANCELLING:
            assert RunState.CANCELLING in ALLOWED_TRANSITIONS[state], state
    assert RunState.CANCELLED in ALLOWED_TRANSITIONS[RunState.CANCELLING]


@pytest.mark.parametrize("pair", ALLOWED_PAIRS, ids=_ids)
def test_allowed_transition_is_accepted(pair: tuple[RunState, RunState]) -> None:
    current, target = pair
    assert check_transition(current, target) is None


@pytest.mark.parametrize("pair", FORBIDDEN_PAIRS, ids=_ids)
def test_other_transition_raises_with_current_state(pair: tuple[RunState, RunState]) -> None:
    current, target = pair
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert info.value.current_state == current.value
    assert info.value.details == {"current_state": current.value}
    assert info.value.status_code == 409
    assert target.value in info.value.message


def test_no_state_may_follow_itself() -> None:
    for state in RunState:
        with pytest.raises(IllegalTransition):
            check_transition(state, state)


def test_terminal_states() -> None:
    expected = {RunState.COMPLETED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED}
    assert expected == TERMINAL_STATES
    for state in RunState:
        assert state.is_terminal == (state in TERMINAL_STATES)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_state_has_no_successor(terminal: RunState) -> None:
    assert ALLOWED_TRANSITIONS[terminal] == frozenset()
    for target in RunState:
        with pytest.raises(IllegalTransition) as info:
            check_transition(terminal, target)
        assert info.value.current_state == terminal.value
        assert "terminal" in info.value.message


def test_every_non_terminal_state_can_reach_a_terminal_state() -> None:
    for state in RunState:
        if not state.is_terminal:
            assert ALLOWED_TRANSITIONS[state] & TERMINAL_STATES or (
                RunState.CANCELLING in ALLOWED_TRANSITIONS[state]
            ), state
