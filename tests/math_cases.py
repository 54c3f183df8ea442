r"""A corpus of tricky math answers, for comparing our math verifier with NeMo Gym's.

Each case is (tag, question, expected_answer, response text). The tags group what
makes a text hard to score: boxed answers, the last number, an expression restated
from the question, fractions vs decimals, units, LaTeX, thinking text, several answers,
no answer. `RESTATED` are the cases whose only "answer" is an expression copied from
the question: math-verify (and so Gym) evaluates it and scores it; ours does not.
"""

from __future__ import annotations

import itertools

Case = tuple[str, str, str, str]

_ARITH = "What is 3 + 18?"
BOXED: list[Case] = [
    ("boxed", _ARITH, "21", text)
    for text in (
        "\\boxed{21}",
        "The answer is $\\boxed{21}$.",
        "\\boxed{ 21 }",
        "\\boxed{21.0}",
        "\\boxed{20}",
        "First \\boxed{19}, then on reflection \\boxed{21}.",
        "\\boxed{21}. Wait, no: \\boxed{19}.",
        "\\boxed{\\boxed{21}}",
        "\\boxed{21",
        "\\boxed{}",
        "\\boxed 21",
        "$\\boxed{21}$ apples",
        "\\fbox{21}",
        "\\boxed{\\text{21}}",
        "\\boxed{21}\n\nI hope it is correct.",
        "Therefore, the final answer is: $\\boxed{21}$. I hope it is correct.",
    )
]

LAST_NUMBER: list[Case] = [
    ("last number", _ARITH, "21", text)
    for text in (
        "21",
        "I get 21.",
        "19, 20, 21",
        "It's 21!",
        "Answer: 21",
        "Final answer: 21",
        "The final answer is 21. I hope it is correct.",
        "The answer is 21, not 19.",
        "21 is wrong; it is 19.",
        "The answer is nineteen.",
        "The answer is twenty-one.",
        "I counted 3 apples and 18 pears, so 21 fruits in all.",
        "**21**",
        "The result: 2 1",
        "The answer is 21.00",
        "The answer is -21",
        "The answer is 2,1",
        "Let me add: 3 plus 18 makes 21",
    )
]

RESTATED: list[Case] = [
    ("restated", question, gold, text)
    for question, gold, text in (
        (_ARITH, "21", "The answer is 3 + 18: 3 + 18 is 19."),
        (_ARITH, "21", "The answer is 3 + 18."),
        (_ARITH, "21", "\\boxed{3 + 18}"),
        (_ARITH, "21", "3 + 18"),
        (_ARITH, "21", "The answer is $3 + 18$"),
        (_ARITH, "21", "We need 3 + 18. So the answer is 3+18."),
        ("Compute $7 \\times 6$.", "42", "The answer is $\\boxed{7 \\times 6}$."),
        ("What is 12 * 12?", "144", "The answer is 12 * 12."),
        ("What is $2^{10}$?", "1024", "\\boxed{2^{10}}"),
        ("What is 100 - 58?", "42", "Final answer: 100 - 58"),
        ("Write $\\frac{1}{4}$ as a decimal.", "0.25", "The answer is $\\frac{1}{4}$."),
        ("Write 1/4 as a decimal.", "0.25", "The answer is 1/4"),
        ("Simplify $\\sqrt{16}$.", "4", "\\boxed{\\sqrt{16}}"),
        ("What is 45 / 9?", "5", "45 / 9 is the answer."),
        ("Expand $(x+1)^2$.", "x^2+2x+1", "\\boxed{(x+1)^2}"),
    )
]

#: Expressions not copied from the question, answers the question itself holds, and
#: restatements math-verify doesn't read as one: these score as Gym scores them.
NOT_RESTATED: list[Case] = [
    ("not restated", question, gold, text)
    for question, gold, text in (
        (_ARITH, "21", "3 + 18 = 21"),
        # Copied from the question, but math-verify reads only the 7 here.
        ("Compute $7 \\times 6$.", "42", "The answer is 7 \\times 6"),
        (_ARITH, "21", "We have 3 + 18 = 21, so the answer is 3 + 18 = 21."),
        (_ARITH, "21", "The answer is 10 + 11."),
        (_ARITH, "21", "\\boxed{7 \\cdot 3}"),
        ("Which is larger, $2^{10}$ or $10^3$?", "2^{10}", "\\boxed{2^{10}}"),
        ("Which is larger, 2^10 or 10^3?", "2^{10}", "The answer is 2^10"),
        ("What is 3 + 18? Give 21 or 22.", "21", "\\boxed{21}"),
        ("Solve x - 3 = 18.", "21", "x = 21"),
        ("Solve x - 3 = 18.", "21", "The answer is x - 3 = 18."),
        ("Factor $x^2 - 1$.", "(x-1)(x+1)", "\\boxed{(x+1)(x-1)}"),
    )
]

FRACTIONS: list[Case] = [
    ("fractions", "Halve one.", gold, text)
    for gold, text in itertools.chain(
        (
            ("0.5", t)
            for t in (
                "\\boxed{\\frac{1}{2}}",
                "\\boxed{1/2}",
                "The answer is 1/2",
                "\\boxed{0.50}",
                "\\boxed{\\frac12}",
                "\\boxed{\\dfrac{2}{4}}",
                "\\boxed{50\\%}",
                "\\boxed{.5}",
                "\\boxed{0.49}",
                "\\boxed{\\frac{1}{3}}",
            )
        ),
        (
            ("\\frac{1}{3}", t)
            for t in (
                "\\boxed{0.3333333}",
                "\\boxed{0.333}",
                "\\boxed{0.33}",
                "\\boxed{1/3}",
                "\\boxed{\\frac{2}{6}}",
                "\\boxed{\\tfrac{1}{3}}",
            )
        ),
        (("1/2", t) for t in ("\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "0.5", "\\boxed{2}")),
        (("3/4", t) for t in ("\\boxed{0.75}", "\\boxed{75\\%}", "\\boxed{\\frac{6}{8}}")),
    )
]

UNITS: list[Case] = [
    ("units", "How long is it?", gold, text)
    for gold, text in (
        ("21", "\\boxed{21 \\text{ cm}}"),
        ("21", "21 cm"),
        ("21", "\\boxed{21\\,\\mathrm{m}}"),
        ("21", "\\boxed{\\$21}"),
        ("21", "It costs $21."),
        ("21", "21 dollars"),
        ("21", "\\boxed{21^\\circ}"),
        ("21", "\\boxed{21 \\text{ meters}}"),
        ("21", "\\boxed{21\\text{cm}^2}"),
        ("9", "\\boxed{9\\%}"),
        ("0.09", "\\boxed{9\\%}"),
        ("9\\%", "\\boxed{9}"),
        ("9\\%", "\\boxed{0.09}"),
        ("21 \\text{ cm}", "\\boxed{21}"),
        ("30^\\circ", "\\boxed{30}"),
        ("30^\\circ", "\\boxed{\\frac{\\pi}{6}}"),
        ("\\$5.00", "\\boxed{5}"),
    )
]

LATEX: list[Case] = [
    ("latex", "Find it.", gold, text)
    for gold, text in (
        ("\\frac{\\sqrt{2}}{2}", "\\( \\frac{\\sqrt{2}}{2} \\)"),
        ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}"),
        ("\\frac{\\sqrt2}{2}", "\\boxed{\\frac{\\sqrt{2}}{2}}"),
        ("\\pi", "$\\pi$"),
        ("\\pi", "\\boxed{3.14}"),
        ("\\pi", "\\boxed{3.14159265}"),
        ("(x+1)^2", "\\boxed{x^2+2x+1}"),
        ("(0,1]", "\\boxed{(0, 1]}"),
        ("(0,1]", "\\boxed{[0, 1]}"),
        ("\\{1,2\\}", "\\boxed{\\{1, 2\\}}"),
        ("\\{1,2\\}", "\\boxed{\\{2, 1\\}}"),
        ("3", "x = 3"),
        ("3", "\\boxed{x=3}"),
        ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}"),
        ("$21$", "\\boxed{21}"),
        ("\\(21\\)", "\\boxed{21}"),
        ("$$21$$", "\\boxed{21}"),
        ("\\[21\\]", "\\boxed{21}"),
        ("\\boxed{21}", "\\boxed{21}"),
        ("21", "\\[ \\boxed{21} \\]"),
        ("21", "$$21$$"),
        ("-\\frac{3}{2}", "\\boxed{-1.5}"),
        ("\\infty", "\\boxed{\\infty}"),
        ("e^{i\\pi}", "\\boxed{-1}"),
        (
            "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
            "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}",
        ),
        ("10^{3}", "\\boxed{1000}"),
        ("1000", "\\boxed{1,000}"),
        ("1000", "\\boxed{1\\,000}"),
        ("\\text{(B)}", "\\boxed{B}"),
        ("x^2", "\\boxed{x \\cdot x}"),
    )
]

THINKING: list[Case] = [
    ("thinking", _ARITH, "21", text)
    for text in (
        "<think>3 + 18, maybe 19? No: 21.</think>The answer is \\boxed{21}",
        "<think>the answer is 21</think> Final answer: 19",
        "<think>\\boxed{21}</think>",
        "<think>\\boxed{19}</think> \\boxed{21}",
        "<think>\\boxed{21}</think> \\boxed{19}",
        "<think>I am not sure. Let me think step by step.",
        "Let me think. 3 + 18... carry nothing... 21.\n</think>\n\n21",
        "<think>\nOkay, 3 plus 18. 18 + 2 = 20, plus 1 is 21.\n</think>\n\\boxed{21}",
    )
]

MULTIPLE: list[Case] = [
    ("multiple", "Solve x^2 - 8x + 15 = 0.", gold, text)
    for gold, text in (
        ("3, 5", "The answers are 3 and 5"),
        ("3, 5", "\\boxed{3, 5}"),
        ("3, 5", "\\boxed{5, 3}"),
        ("3, 5", "\\boxed{3} and \\boxed{5}"),
        ("5", "\\boxed{3} and \\boxed{5}"),
        ("3", "\\boxed{3} and \\boxed{5}"),
        ("3,5", "x = 3 or x = 5"),
        ("3,5", "$x=3$ or $x=5$"),
        ("\\{3, 5\\}", "\\boxed{\\{3,5\\}}"),
        ("3, 5", "\\boxed{3}"),
        ("3", "\\boxed{3, 5}"),
    )
]

NO_ANSWER: list[Case] = [
    ("no answer", _ARITH, "21", text)
    for text in (
        "",
        "I don't know.",
        "   ",
        "The answer is unclear.",
        "\\boxed{\\text{no solution}}",
        "???",
    )
]

#: Where the answer sits in a longer reply: after a reasoning block that has numbers of
#: its own, and before a closing remark.
WRAPPED: list[Case] = [
    (f"{tag}, wrapped", question, gold, before + text + after)
    for (tag, question, gold, text), (before, after) in itertools.product(
        BOXED + FRACTIONS + UNITS + LATEX,
        [
            ("<think>\nTry small cases first: 2 + 2 = 4.\n</think>\n\n", ""),
            ("Let me solve this step by step.\n\n", "\n\nI hope it is correct."),
        ],
    )
]

CASES: list[Case] = [
    *BOXED,
    *LAST_NUMBER,
    *RESTATED,
    *NOT_RESTATED,
    *FRACTIONS,
    *UNITS,
    *LATEX,
    *THINKING,
    *MULTIPLE,
    *NO_ANSWER,
    *WRAPPED,
]
