"""The README's walk-through and "Beyond the contract", pasted into bash against ``make run``, say what they do.

Every ```` ```sh ```` block under the headings ``## Walk-through`` and ``## Beyond the contract`` runs, in
order, in one bash (so a block sees what the blocks before it set, as a reader's terminal does), against
the service as ``launcher.py`` starts it on a port of its own; a block whose line above is an HTML
comment starting ``<!-- not run`` is left out. The test sets ``BASE`` itself and drops the lines that
set it, puts the files the blocks write under ``/tmp/`` in a folder of its own, and runs
``.venv/bin/python`` as the Python running the tests; nothing else of a block is changed.

Each block must match exactly one of ``EXPECTED`` (by a phrase only it holds), and print the facts the
README says it prints; a block added without its facts fails, so the README cannot drift from the
service again. The start-up log of the same run is checked too: each warning once, no banners.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.backing import ROOT
from support.launched import LauncherRun, start

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
RUN_SECTIONS = ("## Walk-through", "## Beyond the contract")
NOT_RUN = "<!-- not run"
BLOCKS_TIMEOUT_S = 240


@dataclass(frozen=True)
class Block:
    """One shell block of the README: the line it starts on and its text."""

    line: int
    text: str


@dataclass
class Expected:
    """What the block holding ``phrase`` prints: ``stdout`` and ``stderr`` patterns, and what it must not."""

    phrase: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    not_printed: list[str] = field(default_factory=list)


def readme_blocks(text: str) -> list[Block]:
    """The ``sh`` blocks of the sections that are run, without those marked not to be."""
    blocks, section, lines = [], None, text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line.strip()
        if line.strip() == "```sh" and section in RUN_SECTIONS:
            above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            end = lines.index("```", index + 1)
            if not above.strip().startswith(NOT_RUN):
                blocks.append(Block(index + 1, "\n".join(lines[index + 1 : end])))
            index = end
        index += 1
    return blocks


def as_run(block: Block, scratch: Path) -> str:
    """The block as the test runs it: no line of its own sets BASE, its files in ``scratch``, the tests' Python."""
    kept = [line for line in block.text.splitlines() if not re.match(r"\s*BASE=", line)]
    return "\n".join(kept).replace("/tmp/", f"{scratch}/").replace(".venv/bin/python", sys.executable)


def expectations(base: str) -> list[Expected]:
    """The facts each block's text promises, for a service at ``base``."""
    sample = re.escape(f"{base}/samples/")
    return [
        Expected(
            "-F webhook_url=$BASE/api/webhooks/receive",
            stdout=[
                rf"1,SKU1,\"{sample}sku1_landscape\.jpg,{sample}sku1_bottle\.jpg\"",  # names this port
                r'"status": "COMPLETED"',
                r'"completed_images": 5',
                r"S\. No\.,Product Name,Input Image Urls,Output Image Urls",
                r"first-output\.jpg: JPEG image data",
                r'"status": "DELIVERED"',
                r'"signature_valid": true',
            ],
        ),
        Expected(
            "cli.py sample --output",
            stdout=[r"^[0-9a-f-]{36}$", r"^COMPLETED: 100\.0% \(5 completed, 0 failed, 0 pending of 5\)$"],
            stderr=[r"COMPLETED: 100\.0% \(5 completed", r"output CSV saved to "],
            not_printed=[r"error:", r"FAILED"],
        ),
        Expected(
            "Idempotency-Key: $KEY",
            stdout=[r"HTTP/1\.1 200", r"(?i)Idempotent-Replayed: true", r'"request_id"'],
            not_printed=[r"(?i)Retry-After"],
        ),
        Expected("/cancel", stdout=[r'"status":\s*"CANCELLED"|already_final']),
        Expected(
            "/tmp/broken.csv $BASE/api/upload",
            stdout=[r'"retried_images":\s*1[^\n]*\n(.|\n)*"retried_images":\s*1'],
        ),
        Expected(
            "$REQUEST_ID/failed-rows.csv",
            stdout=[r"^S\. No\.,Product Name,Input Image Urls$", rf"^2,Gone,{sample}missing\.jpg$"],
        ),
        Expected(
            "cat -et",
            stdout=[
                r"^M-oM-;M-\?Handle,S\. No\.,Product Name,Input Image Urls,Variant Price,Output Image Urls\^M\$$",
                rf"^mug,007,Mug,{sample}sku1_bottle\.jpg,\"1,50\",{re.escape(base)}/media/\S+\.jpg\^M\$$",
            ],
        ),
        Expected("report.csv && head -3", stdout=[r"^S\. No\.,Product Name,Position,Input Image Url,", r"^007,Mug,1,"]),
        Expected("curl -sN", stdout=[r"^retry: 3000$", r"^event: final$"], not_printed=[r"% Total"]),
        Expected(
            "cli.py upload /tmp/broken.csv",
            stderr=[
                r"COMPLETED_WITH_ERRORS: 100\.0% \(1 completed, 1 failed, 0 pending of 2\)",
                rf"^1 failed: http_404 \u00d71 — report: {re.escape(base)}/api/requests/[0-9a-f-]{{36}}/report\.csv",
                r"^the rows to fix and upload again: cli\.py failed-rows [0-9a-f-]{36} --output failed-rows\.csv$",
                r"report saved to ",
                r"failed rows saved to ",
            ],
        ),
        Expected("-F quality=auto $BASE/api/upload | python3", stdout=[r'"quality": "auto"', r'"score": 0\.\d+']),
        Expected("never_bigger=false", stdout=[r'"request_id"']),
        Expected("grep '\"reused\"'", stdout=[r'"reused": true'], not_printed=[r'"reused": false']),
        Expected("format=webp", stdout=[r'"request_id"(.|\n)*"request_id"']),
        Expected(
            "-F profile=google_merchant",
            stdout=[
                r'^COMPLETED \{"profile": "google_merchant", "checked": 5, "passing_as_uploaded": 5, "fixed": 0, '
                r'"still_failing": 0, "by_rule": \{\}\}$',
                r"^S\. No\.,Product Name,Input Image Urls,Output Image Urls,Output Image Urls \(zoom\),"
                r"Output Image Urls \(thumb\)$",
            ],
        ),
        Expected(
            "shopify_products.csv $BASE/api/upload",
            stdout=[
                r"^shopify 2 5$",
                r"^\['Image Src', 'Variant Image'\]$",
                r"^SKU1750\.MAIN\.jpg +\d{4}-",
                r"^SKU1750\.PT01\.jpg ",
                r"^SKU2\.PT02\.jpg ",
                r"^google_merchant$",
            ],
        ),
        Expected(
            'download-images "$REQUEST_ID"',
            stdout=[r"^[0-9a-f-]{36}$", r"^glass-bottle_1\.jpg ", r"^fruit-bowl_3\.jpg "],
            stderr=[
                r"^COMPLETED: 100\.0% \(5 completed, 0 failed, 0 pending of 5\)$",
                r"output CSV saved to ",
                r"image pack saved to ",
            ],
            not_printed=[r"error:"],
        ),
        Expected("/api/openapi.json", stdout=[r'"openapi":\s*"3\.1']),
    ]


def split_output(text: str, marker: str, count: int) -> list[str]:
    """What each block printed, from the output of the whole run with ``marker N`` lines between blocks."""
    parts = re.split(rf"^{marker} (\d+)\n", text, flags=re.MULTILINE)
    printed = dict(zip((int(n) for n in parts[1::2]), parts[2::2], strict=True))
    return [printed.get(n, "") for n in range(count)]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Iterator[LauncherRun]:
    run = start(tmp_path_factory.mktemp("readme"), {})
    try:
        yield run
    finally:
        run.stop()
        run.kill_left_over()


def test_the_readme_blocks_print_what_the_readme_says(launched: LauncherRun, tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text())
    expected = expectations(launched.base_url)
    marker = "@@README-BLOCK@@"
    script = [f'BASE="{launched.base_url}"']
    for number, block in enumerate(blocks):
        script += [f"echo '{marker} {number}'; echo '{marker} {number}' >&2", as_run(block, tmp_path)]
    ran = subprocess.run(
        ["bash"],
        input="\n".join(script) + "\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BLOCKS_TIMEOUT_S,
    )
    stdout, stderr = split_output(ran.stdout, marker, len(blocks)), split_output(ran.stderr, marker, len(blocks))

    for number, block in enumerate(blocks):
        where = (
            f"README.md line {block.line}:\n{block.text}\n--- stdout:\n{stdout[number]}\n--- stderr:\n{stderr[number]}"
        )
        matching = [facts for facts in expected if facts.phrase in block.text]
        assert len(matching) == 1, f"{len(matching)} expectations match the block at {where}"
        facts = matching[0]
        assert "curl: (" not in stderr[number] and "Traceback" not in stderr[number], where
        for pattern in facts.stdout:
            assert re.search(pattern, stdout[number], re.MULTILINE), f"{pattern!r} not printed on stdout by {where}"
        for pattern in facts.stderr:
            assert re.search(pattern, stderr[number], re.MULTILINE), f"{pattern!r} not printed on stderr by {where}"
        for pattern in facts.not_printed:
            both = stdout[number] + stderr[number]
            assert not re.search(pattern, both, re.MULTILINE), f"{pattern!r} printed by {where}"
    unused = [facts.phrase for facts in expected if not any(facts.phrase in block.text for block in blocks)]
    assert not unused, f"no README block holds {unused}"


def test_make_run_says_each_thing_once(launched: LauncherRun) -> None:
    log = launched.log()
    assert log.count("API_KEYS is not set") == 1, log
    assert log.count("FETCH_ALLOWED_NETWORKS was not set") == 1, log
    assert log.count("Running upgrade  -> 0001") == 1, log  # the migrations, at migrate only
    for noise in ("No hostname was supplied", "setup plugin", "[tasks]", "celery beat v", ".> transport:"):
        assert noise not in log, f"{noise!r} in the start-up log:\n{log}"
    assert log.count(" ready.") == 3, log  # each Celery worker says it is ready, once
