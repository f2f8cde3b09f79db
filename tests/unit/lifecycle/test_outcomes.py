"""Answers and rewards find the turn whose model versions they judge."""

from deployments.lifecycle.outcomes import join

from .builders import answer, reward, shadow, turn


def _linked(outcomes):
    return {(label.turn.turn_id, label.item_id, label.correct) for label in outcomes.labels}


def test_a_feedback_answer_judges_its_own_turn():
    outcomes = join([turn("t1", 1.0), turn("t2", 2.0)], [answer("t2:feedback", 2.5)], [])
    assert _linked(outcomes) == {("t2", "i1", True)}


def test_an_answer_sent_with_a_turn_judges_the_learners_turn_before_it():
    turns = [turn("t1", 1.0), turn("o1", 1.5, learner="l2"), turn("t2", 2.0)]
    outcomes = join(turns, [answer("t2:answer", 2.0, correct=False)], [])
    assert _linked(outcomes) == {("t1", "i1", False)}  # not l2's turn, though it came between


def test_an_answer_whose_turn_was_not_stored_judges_the_learners_latest_turn():
    outcomes = join([turn("t1", 1.0), turn("t2", 2.0)], [answer("t3:answer", 3.0)], [])
    assert _linked(outcomes) == {("t2", "i1", True)}


def test_answers_to_turns_outside_the_window_are_counted_not_linked():
    answers = [
        answer("t1:answer", 1.0),  # answers a turn before the window's first
        answer("t0:feedback", 1.2),  # a turn before the window
        answer("t1:feedback", 1.3, learner="l2"),  # another learner's turn id
        answer("t1:hint", 1.4),  # not an answer to an exercise
    ]
    outcomes = join([turn("t1", 1.0)], answers, [])
    assert outcomes.labels == [] and outcomes.unlinked_answers == 4


def test_one_label_per_turn_and_item_the_first_answer_wins():
    turns = [turn("t1", 1.0, predictions={"i1": 0.8, "i2": 0.3}), turn("t2", 2.0)]
    answers = [
        answer("t2:answer", 2.0, correct=False),  # the same exercise, answered again later
        answer("t1:feedback", 1.5, correct=True),
        answer("t1:x:feedback", 1.6),  # a turn id with a colon: no such turn
    ]
    outcomes = join(turns, answers, [])
    assert _linked(outcomes) == {("t1", "i1", True)}
    assert outcomes.next_answer["t1"].correct is True
    assert outcomes.unlinked_answers == 1


def test_rewards_and_shadow_outputs_join_by_turn_id():
    outcomes = join(
        [turn("t1", 1.0)],
        [],
        [reward("t1", 1.0), reward("t0", 0.0)],
        [shadow("t1", "emotion", "v4", {"state": "confused"}), shadow("t0", "emotion", "v4", {})],
    )
    assert [(r.turn_id, t.turn_id) for r, t in outcomes.rewards] == [("t1", "t1")]
    assert outcomes.unlinked_rewards == 1
    assert [s.turn_id for s in outcomes.shadows] == ["t1"]
