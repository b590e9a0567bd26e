"""Sequential revision (Snell et al. 2024): the model sees its earlier attempts and
writes a corrected one. N/M parallel chains of M attempts each (M = N: purely
sequential; M = 1: best-of-N). The answer is a weighted vote over every attempt.

A chain is one conversation: attempt k+1 is the model's next turn after a user turn
asking it to check and correct its attempts, decoded on attempt k's own KV. Nothing is
decoded twice (on a CPU a prompt costs about as much per token as generating it), and
each revision is a child of the attempt it revised. When the attempts outgrow
`revise_context_chars`, the chain restarts from a fresh prompt holding the most recent
attempts that fit, and says so in the events. Each attempt is one of the N samples
and may take budget / N tokens, like a vote's sample: a looping attempt ends unanswered
there and the chain goes on.
"""

from __future__ import annotations

from typing import Any

from tts_tui.search.run import Result, Search
from tts_tui.search.strategies.sampling import _by_id, _representative
from tts_tui.search.tree import Node

# Two wordings: a fresh prompt quotes the attempts in the user turn; a conversation's
# attempt is the model's own previous turn. Told "above are earlier attempts" in a
# conversation, the 1.5B model answered "I cannot provide a corrected solution without
# the earlier attempts" on every revision (gsm8k test/2), so that turn says "your".
REVISE_ASK = (
    "Above are earlier attempts at this problem. Check them step by step, find any mistake, "
    "and write a complete corrected solution. Put the final answer within \\boxed{}."
)
FOLLOW_UP_ASK = (
    "Check your solution above step by step and find any mistake. Then write a complete "
    "corrected solution. Put the final answer within \\boxed{}."
)


def revision_prompt(problem: str, attempts: list[str], max_chars: int) -> tuple[str, int]:
    """The problem with the most recent attempts that fit in `max_chars`; returns the
    prompt and how many attempts were left out."""
    kept: list[str] = []
    used = 0
    for text in reversed(attempts):
        if kept and used + len(text) > max_chars:
            break
        kept.append(text[-max_chars:])
        used += len(text)
    kept.reverse()
    first = len(attempts) - len(kept) + 1
    body = "\n\n".join(f"Attempt {first + i}:\n{t.strip()}" for i, t in enumerate(kept))
    return f"{problem}\n\n{body}\n\n{REVISE_ASK}", len(attempts) - len(kept)


def revise(search: Search) -> Result:
    p = search.params
    chains = max(1, p.n // p.m)
    root = search.tree.root
    texts: list[list[str]] = [[] for _ in range(chains)]
    lasts: list[Node | None] = [None] * chains
    answers: list[list[str | None]] = [[] for _ in range(chains)]
    spent: list[list[int]] = [[] for _ in range(chains)]  # tokens of each attempt
    all_done: list[Node] = []
    in_context = [0] * chains  # characters of attempts in each chain's current conversation
    ask = search.gen.follow_up(FOLLOW_UP_ASK)
    for k in range(p.m):
        if search.stopped:
            break
        parents: list[Node] = []
        states: list[Any] = []
        prefixes: list[str] = []
        for c in range(chains):
            last = lasts[c]
            if k == 0 or last is None:
                parents.append(root)
                states.append(None)
                prefixes.append("")
            elif in_context[c] <= p.revise_context_chars:
                # The chain is one conversation: the attempt's own KV plus a new user turn.
                parents.append(last)
                states.append(None)
                prefixes.append(ask)
            else:
                # Too long to go on: a fresh prompt with the most recent attempts that fit.
                prompt, dropped = revision_prompt(search.tree.problem, texts[c], p.revise_context_chars)
                in_context[c] = sum(len(t) for t in texts[c][dropped:])
                search.note(f"chain {c + 1}: revision {k + 1} keeps the last {len(texts[c]) - dropped} "
                            f"of {len(texts[c])} attempts (context)", chain=c, dropped=dropped)
                parents.append(last)
                states.append(search.gen.root(prompt))
                prefixes.append("")
        paths = search.expand(parents, states=states if any(states) else None, prefixes=prefixes,
                              template=True, scoped=k > 0, max_steps=p.max_steps, keep=True, kind="step",
                              max_total=p.share)  # an attempt is one of the N samples
        for c, (path, st, parent) in enumerate(zip(paths, states, parents)):
            if st is not None:
                search.gen.release(st)
            if parent is not root and parent.state is not None:
                search.gen.release(parent.state)  # the revision has forked from it
                parent.state = None
            if not path:
                continue
            path[0].meta["attempt"] = k + 1
            path[0].meta["chain"] = c + 1
            if parent is not root:  # what the model was asked, for the detail pane
                path[0].meta["asked"] = FOLLOW_UP_ASK if st is None else REVISE_ASK
            if path[0].forced:
                path[0].forced = f"[asked to check and correct attempt {k}] "  # not the raw template text
            lasts[c] = path[-1]
            texts[c].append("".join(n.text for n in path))
            in_context[c] += len(texts[c][-1])
            answers[c].append(path[-1].answer)
            spent[c].append(sum(len(n.tokens) for n in path))
            if path[-1].answer:
                all_done.append(path[-1])
    # Each attempt is weighed by the aggregate over its own steps, not the earlier attempts'.
    weights = search.path_scores(all_done, since=[_attempt_start(search, n) for n in all_done])
    groups = search.vote(all_done, weights)
    flips = sum(1 for chain in answers for a, b in zip(chain, chain[1:])
                if a and b and not search.answers.equivalent(a, b))
    result = search.finish("revise", groups, _representative(search, groups, _by_id(all_done, weights)))
    result.stats["chains"] = answers
    result.stats["attempt_tokens"] = spent
    result.stats["answer_changes"] = flips
    return result


def _attempt_start(search: Search, last: Node) -> Node:
    """The first step of the attempt that `last` ends (a revision's steps follow the
    attempt it revised on one path, so the aggregate stops at the attempt's start)."""
    cur = last
    while "attempt" not in cur.meta:
        parent = search.tree.parent(cur)
        if parent is None or parent.kind == "root":
            break
        cur = parent
    return cur
