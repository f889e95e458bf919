"""Optional: a local text-generation model rephrases the template narration, facts checked.

Where it sits: inside `pipeline.Summarizer._narration`, after the template narrator, only when
`summarizer.rephrase_model` names a directory with a transformers causal LM (safetensors weights,
tokenizer files). Nothing is downloaded: loading is `local_files_only`, and a missing directory is
a configuration error at start-up, not at the first event.

Every rephrased sentence must pass two checks or the template sentence is kept:
- `narrator.unsupported_claims` finds nothing the event does not support (no invented numbers,
  codes, serials, quotes or modalities), and
- it still carries every number, identifier and quote of the template sentence (no fact dropped).
So the worst a bad model can do is change nothing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from schemas.errors import ConfigError
from services.summarizer.facts import EventFacts
from services.summarizer.narrator import MissingEvidence, Narration, unsupported_claims

log = logging.getLogger(__name__)

PROMPT = ("Rewrite the sentence for a busy maintenance lead. Keep every number, name, code and quote "
          "exactly as written. Do not add anything.\nSentence: {sentence}\nRewritten:")
_FACT_TOKENS = re.compile(r"“[^”]*”|\b[A-Za-z]*\d[\w.:-]*\b")


def fact_tokens(text: str) -> set[str]:
    """Numbers, identifiers with digits, and quotes: what a rewrite must keep verbatim."""
    return {t.rstrip(".,:;") for t in _FACT_TOKENS.findall(text)}


class Rephraser:
    def __init__(self, path: Path, max_new_tokens: int = 64):
        path = Path(path)
        if not (path / "config.json").exists():
            raise ConfigError(f"summarizer.rephrase_model={path} is not a transformers model directory (no "
                              "config.json); unset FW_SUMMARIZER__REPHRASE_MODEL to use the template narrator")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # safetensors only: a checkpoint is never unpickled (STYLE.md)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        self.accepted = 0
        self.rejected = 0

    def _generate(self, sentence: str) -> str:
        import torch

        prompt = PROMPT.format(sentence=sentence)
        inputs = self.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        text = self.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return text.strip().split("\n")[0].strip()

    def accept(self, original: str, candidate: str, facts: EventFacts, missing: Sequence[MissingEvidence],
               tz: str) -> bool:
        if not candidate or len(candidate) > 2 * len(original) + 40:
            return False
        if not fact_tokens(original) <= fact_tokens(candidate):
            return False
        return not unsupported_claims(candidate, facts, missing, tz)

    def rephrase(self, narration: Narration, facts: EventFacts, missing: Sequence[MissingEvidence] = (),
                 tz: str = "UTC") -> Narration:
        out = []
        for sentence in narration.sentences:
            try:
                candidate = self._generate(sentence)
            except Exception as e:  # a model problem costs the rephrasing, never the summary
                log.warning("rephrasing failed (%s); keeping the template sentence", e)
                candidate = ""
            if self.accept(sentence, candidate, facts, missing, tz):
                out.append(candidate)
                self.accepted += 1
            else:
                out.append(sentence)
                self.rejected += 1
        return Narration(tuple(out))
