"""The paper's prompts, verbatim (docs/paper_protocols.md;
Figure 3's from the paper's Appendix C.1), and Figure 5's panels."""

from __future__ import annotations

# Figure 5 (Gemma 7B collapse): the question, then the sequence. The paper does not say what
# separates them; one space (FIG5_SEPARATOR).
FIG5_COUNT_QUESTION = "How many ones are in the following sequences?"
FIG5_COPY_QUESTION = "Can you copy the following number?"
FIG5_SEPARATOR = " "
# Figure 2 (Gemini copying), with "last" or "first" for `which`.
FIG2_COPY = (
    "Consider the following sequence: {seq}. What is the {which} digit in this sequence? "
    "Please answer exactly as 'The answer to your question is: <ANSWER>'"
)
FIG2_ANSWER = "The answer to your question is:"
# Figure 3 (Gemini counting), Appendix C.1. The second prompt's unbalanced quote is the
# paper's ("where 'xxxx is your answer").
FIG3_SUM = (
    "Please perform the following sum: {seq}. Please give the answer on the final line "
    "exactly as 'The final answer to your maths question is: xxxx', where 'xxxx' is your answer."
)
FIG3_COUNT = (
    "Please count the number of ones in the following sequence: {seq}. Please give the "
    "answer on the final line exactly as 'The final answer to your maths question is: xxxx', "
    "where 'xxxx is your answer."
)
FIG3_ANSWER = "The final answer to your maths question is:"

# Figure 5's panels: question, sequence kind.
FIG5_PANELS = {
    "5a": (FIG5_COUNT_QUESTION, "ones"),
    "5b": (FIG5_COUNT_QUESTION, "digits"),
    "5c": (FIG5_COPY_QUESTION, "ones"),
    "5d": (FIG5_COPY_QUESTION, "ones, a comma after every third"),
}
COMMA_EVERY = 3


def fig5_prefix(question: str) -> str:
    return question + FIG5_SEPARATOR
