"""Texts for the mcqa verifier, graded by NeMo Gym's own mcqa server in the parity test
(tests/e2e/test_agents_gym.py) and by ours: the rewards must be equal on every one."""

OPTIONS = [{"A": "London"}, {"B": "Paris"}, {"C": "Berlin"}, {"D": "Madrid"}]

TEXTS = [
    "The capital of France is Paris, so the answer is \\boxed{B}",
    "\\boxed{\\text{B}}",
    "\\boxed{\\text{C}}",
    "\\boxed{(B)}",
    "\\boxed{[B]}",
    "\\boxed{B: Paris}",
    "\\boxed{A} no wait, \\boxed{B}",
    "\\boxed{B} no wait, \\boxed{A}",
    "\\boxed{E}",
    "\\boxed{b}",
    "(B)",
    "\\boxed{Paris}",
    "\\boxed{paris}",
    "\\boxed{Paris or Berlin}",
    "\\boxed{\\text{Paris}}",
    "I think.\nAnswer: B",
    "answer:  paris",
    "**Answer: B**",
    "Answer: B.",
    "Answer: \\text{B}",
    "",
    "   ",
    "B",
]
MODES = [
    "strict_single_letter_boxed",
    "lenient_boxed",
    "lenient_answer_colon",
    "lenient_answer_colon_md",
]
#: Rows' own extraction patterns (Gym tries them before the mode); the last match counts.
TEMPLATES = [None, {"output_regex": r"final choice:\s*\(?([A-Za-z])\)?"}]
EXTRA_TEXTS = ["final choice: (b) then final choice: B", "final choice: Ｂ", "final choice: z"]
