"""The Java half of pycocoevalcap: its PTB tokenizer and its METEOR 1.5 scorer, run as subprocesses.

pycocoevalcap 1.2 ships both as jar files. Its METEOR wrapper can block forever, because it pipes
stderr without reading it and reads replies without a timeout. Its tokenizer wrapper writes a
temporary file into the installed package folder. This module runs the same jar files with the
same arguments through pipes with timeouts, so a failure becomes a ScorerError, not a hung process.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from pycocoevalcap.meteor import meteor as meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.tokenizer import ptbtokenizer as tokenizer_module

from hybridcap.errors import HybridcapError

# Generous limits that only exist to catch a hung Java process. For scale, on a busy 2-core
# machine METEOR took 4-12 s to load its paraphrase table and then about 0.5 ms per pair.
METEOR_STARTUP_TIMEOUT_S = 180.0
TOKENIZER_BASE_TIMEOUT_S = 120.0
SECONDS_PER_LINE_ALLOWED = 0.01
# Seconds a METEOR process that closed its output gets to exit, so that its exit code can be reported.
METEOR_EXIT_WAIT_S = 5.0


class ScorerError(HybridcapError):
    """A caption scorer could not run or returned output that cannot be trusted."""


class JavaNotFoundError(ScorerError):
    """Java is needed by the requested scorers but is not on PATH."""


def find_java() -> str | None:
    """Return the absolute path of the ``java`` executable on PATH, or None."""
    return shutil.which("java")


def _stderr_tail(stderr_text: str) -> str:
    lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


class _Watchdog:
    """Kill ``process`` when the ``with`` block takes longer than ``seconds``."""

    def __init__(self, process: subprocess.Popen, seconds: float) -> None:
        self.fired = False
        self._process = process
        self._timer = threading.Timer(seconds, self._kill)
        self._timer.daemon = True

    def _kill(self) -> None:
        self.fired = True
        self._process.kill()

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


def run_ptb_tokenizer(java: str, sentences: Sequence[str]) -> list[str]:
    """Tokenise sentences with pycocoevalcap's Stanford PTB tokenizer and drop its punctuation tokens.

    Produces the same tokens as ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``: lower case,
    one output line per input line, then the tokens in its ``PUNCTUATIONS`` list removed.

    Args:
        java: path of the Java executable.
        sentences: texts without line breaks (sanitise them first). An empty text gives an empty line.

    Raises:
        ScorerError: Java failed, timed out, or returned a different number of lines than it was
            given, which would attach tokens to the wrong captions.
    """
    if not sentences:
        return []
    for index, sentence in enumerate(sentences):
        if "\n" in sentence or "\r" in sentence:
            raise ValueError(f"sentence {index} contains a line break; sanitise it before tokenising")

    jar_folder = Path(tokenizer_module.__file__).parent
    command = [
        java,
        "-cp",
        tokenizer_module.STANFORD_CORENLP_3_4_1_JAR,
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
        "-encoding",
        "UTF-8",
    ]
    # Without a final newline the tokenizer joins the last line with nothing after it, which is
    # harmless, but ending every line the same way keeps the count check below exact.
    text = "\n".join(sentences) + "\n"
    timeout_s = TOKENIZER_BASE_TIMEOUT_S + SECONDS_PER_LINE_ALLOWED * len(sentences)
    try:
        completed = subprocess.run(
            command,
            cwd=jar_folder,
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ScorerError(f"the PTB tokenizer timed out after {timeout_s:.0f} s on {len(sentences)} captions") from error
    except OSError as error:
        raise ScorerError(f"cannot start the PTB tokenizer with {java}: {error}") from error
    stderr_text = completed.stderr.decode("utf-8", errors="replace")
    if completed.returncode != 0:
        raise ScorerError(f"the PTB tokenizer exited with code {completed.returncode}: {_stderr_tail(stderr_text)}")

    output = completed.stdout.decode("utf-8", errors="replace")
    lines = output.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(sentences):
        raise ScorerError(
            f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions, "
            "so its tokens cannot be matched to the captions; this is a bug in caption sanitising"
        )
    punctuation = set(tokenizer_module.PUNCTUATIONS)
    return [" ".join(token for token in line.split() if token not in punctuation) for line in lines]


class MeteorProcess(Meteor):
    """pycocoevalcap's METEOR 1.5 jar in one long-lived subprocess, with timeouts.

    The new process spends seconds loading METEOR's paraphrase table in the background, so create
    this object before other slow work. Use it as a context manager or call ``close``.

    ``Meteor.__init__`` is deliberately not called: it pipes stderr without ever reading it, so a
    chatty Java process could block. The command line is the one pycocoevalcap uses, and the
    inherited ``_stat`` sends one ``SCORE`` line per pair.
    """

    def __init__(self, java: str, timeout_s: float = METEOR_STARTUP_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.meteor_cmd = [java, "-jar", "-Xmx2G", meteor_module.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
        self.lock = threading.Lock()
        self._stderr_file = tempfile.TemporaryFile()
        self._last_stderr = ""
        self._closed = False
        try:
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd,
                cwd=Path(meteor_module.__file__).parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr_file,
            )
        except OSError as error:
            self._stderr_file.close()
            self._closed = True
            raise ScorerError(f"cannot start METEOR with {java}: {error}") from error

    def statistics(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """Return METEOR's sufficient statistics line for each ``(hypothesis, references)`` pair.

        Texts must already be tokenised and free of ``|`` and line breaks.
        """
        timeout_s = self.timeout_s + SECONDS_PER_LINE_ALLOWED * len(pairs)
        with self.lock, _Watchdog(self.meteor_p, timeout_s) as watchdog:
            try:
                lines = [self._stat(hypothesis, list(references)) for hypothesis, references in pairs]
            except OSError as error:
                raise self._failure(watchdog, timeout_s) from error
        if any(not line for line in lines):
            raise self._failure(watchdog, timeout_s)
        return lines

    def evaluate(self, statistics: Sequence[str]) -> tuple[float, list[float]]:
        """Return the corpus METEOR score and one score per statistics line.

        The corpus score is the one METEOR computes over all lines together, which is what
        ``Meteor.compute_score`` returns. It is not the mean of the per-line scores.
        """
        timeout_s = self.timeout_s + SECONDS_PER_LINE_ALLOWED * len(statistics)
        with self.lock, _Watchdog(self.meteor_p, timeout_s) as watchdog:
            try:
                self.meteor_p.stdin.write(("EVAL ||| " + " ||| ".join(statistics) + "\n").encode("utf-8"))
                self.meteor_p.stdin.flush()
                replies = [self.meteor_p.stdout.readline() for _ in range(len(statistics) + 1)]
            except OSError as error:
                raise self._failure(watchdog, timeout_s) from error
        try:
            values = [float(reply) for reply in replies]
        except ValueError as error:
            raise self._failure(watchdog, timeout_s) from error
        return values[-1], values[:-1]

    def _failure(self, watchdog: _Watchdog, timeout_s: float) -> ScorerError:
        if watchdog.fired:
            self.close()
            return ScorerError(f"METEOR timed out after {timeout_s:.0f} s; rerun without meteor in --metrics to skip it")
        # End of output can arrive a moment before the process has exited, so poll() alone may
        # still see it running.
        try:
            return_code = self.meteor_p.wait(timeout=METEOR_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return_code = None
        self.close()
        if return_code is None:
            failure = "closed its output but is still running"
        else:
            failure = f"stopped with exit code {return_code}"
        return ScorerError(f"METEOR {failure}: {self._last_stderr}; rerun without meteor in --metrics to skip it")

    def close(self) -> None:
        """Stop the Java process. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        process = self.meteor_p
        # METEOR keeps no state worth a clean shutdown, and while it loads its paraphrase table
        # it would not even notice a closed stdin, so it is killed right away.
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._stderr_file.seek(0)
        self._last_stderr = _stderr_tail(self._stderr_file.read().decode("utf-8", errors="replace"))
        self._stderr_file.close()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # The base class's __del__ kills the process under the lock; closing here is enough.
        if not getattr(self, "_closed", True):
            self.close()
