"""Documents on which a fast encoder and PaddleNLP's tokenizer are most likely to part ways: the probe set of
prepare-data's self-check and of the identity tests."""

from __future__ import annotations

from llmpt.data.encode import MAX_REPEATED_LEN

# literals that are special in one tokenizer family or another; in plain text they must come out exactly as
# the tokenizer's own class turns them into ids (a special id, or ordinary pieces)
SPECIAL_LITERALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<|begin_of_text|>",
    "<|extra_0|>",
    "<extra_0>",
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
)

_AROUND = (MAX_REPEATED_LEN - 1, MAX_REPEATED_LEN, MAX_REPEATED_LEN + 1, MAX_REPEATED_LEN + 2, 3 * MAX_REPEATED_LEN)


def adversarial_documents(extra_literals: tuple[str, ...] = (), large: bool = False, quick: bool = False) -> list[str]:
    """Raw document texts (before cleaning). `extra_literals`: the tokenizer's own special tokens.
    `large`: add a ~1 MB document (the tests use it). `quick`: the run-time probe's subset (runs only just below
    and above the threshold: a pure-Python BPE spends seconds on the long ones)."""
    literals = tuple(dict.fromkeys((*SPECIAL_LITERALS, *extra_literals)))
    docs: list[str] = []
    for lit in literals:
        docs += [
            f"Hello {lit} world",
            f"{lit}",
            f"  {lit}  ",
            f"a{lit}b{lit}{lit}c",
            f"text\n{lit}\nmore",
            f"x {lit}\u0338 y",  # a combining mark right after the literal (NFC may fold it into '>')
            f"{lit[:-1]} half {lit[1:]}",
            f"<{lit}>",
        ]
    docs.append(" ".join(literals))
    for ch in ("a", "\n", "\r", " ", "\t", "=", "é", "中", "🙂", "\u200b", "\u00a0", "-", "."):
        for n in (MAX_REPEATED_LEN, MAX_REPEATED_LEN + 1) if quick else _AROUND:
            docs += [f"start {ch * n} end"] if quick else [ch * n, f"start {ch * n} end", f"x{ch * n}"]
    docs += [
        "line one\r\nline two\r\n\r\nline four\r\n",
        "\r\n\r\n  padded  \r\n",
        "   leading spaces",
        "trailing spaces   ",
        "\t\ttabs\tin\t\ttext\t",
        "no\u00a0break\u00a0spaces\u00a0",
        "zero\u200bwidth\u200bspace\u200c\u200d\ufeff",
        "combining: e\u0301 a\u0308 o\u0302\u0323 n\u0303 \u1100\u1161\u11a8 Å Å",
        "emoji: 🙂🚀👍🏽 👨‍👩‍👧‍👦 🇩🇪 ❤️ 1️⃣",
        "中文文本，包含标点。日本語のテキスト、한국어 텍스트.",
        "mixed 中文 and English 123 4567 89012 3.14159 1,000,000",
        "Ελληνικά русский עברית العربية हिन्दी ไทย",
        "",
        " ",
        "\n\n\n",
        "\t \r\n \u3000",
        "one\n\ntwo\n\n\nthree\n\n\n\nfour",
        "   \n  \n",
        "code:\n    def f(x):\n\treturn x  # comment\n\n\n\n",
        "it's we're they've I'm you'll he'd IT'S WE'RE",
        "\x00\x01\x1c\x1d\x1e\x1f\x85\u2028\u2029\x7f",
        "\ud7ff\ue000\uffff" + chr(0x10FFFF) + chr(0x1F600),
        "a" * 40 + "b" * 40 + " " * 64 + "\n" * 64,
    ]
    if large:
        docs.append(_large_document())
    return docs


def _large_document() -> str:
    """~1 MB: many scripts, runs of every length around the threshold, special literals sprinkled in."""
    parts = []
    i = 0
    while sum(map(len, parts)) < 1_000_000:
        parts.append(
            f"Paragraph {i}: The quick brown fox — naïve café {i * 7919 % 100003}. 中文段落 {i}。"
            f"{'=' * (MAX_REPEATED_LEN - 2 + i % 5)} {SPECIAL_LITERALS[i % len(SPECIAL_LITERALS)]} 🙂\n"
            + ("\n" * (i % 4))
            + ("\t" * (i % 3))
        )
        i += 1
    return "".join(parts)
