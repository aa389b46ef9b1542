"""The frozen open_clip text tower and the per-run cache of caption embeddings.

Only the text half of the CLIP model is built: the captioner never looks at CLIP's image tower,
and leaving it out saves about 86M parameters of memory and construction time for ViT-B/16.
The captions form a finite set, so each distinct caption is embedded once per run and the
embeddings are stored in the run folder. The training loop looks them up by caption index and
never runs the text tower.

Weights come from one of three sources:

- an open_clip pretrained tag such as ``openai``, resolved from the Hugging Face cache when the
  file is already there and otherwise downloaded by open_clip;
- a local weights file (``weights_path``), which never touches the network;
- ``none``: the same architecture randomly initialised from a fixed seed, for machines without
  the weights. Its embeddings carry no language knowledge.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridcap.errors import HybridcapError, RunFolderError
from hybridcap.io import load_weights, save_weights

DEFAULT_MODEL_NAME = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
RANDOM_PRETRAINED = "none"
RANDOM_INIT_SEED = 0

# A hub that does not respond within this many seconds is treated as unreachable. When a file is
# not cached, huggingface_hub 2.4 retries its metadata request with a 60 s timeout, for each of
# the two file names open_clip tries, and this probe avoids that wait.
HUB_PROBE_TIMEOUT_SECONDS = 3.0

# Captions per forward pass when filling the cache. On a 2-core CPU, 600 captions took 3.5 s in
# batches of 64 and 5.4 s in one batch.
EMBEDDING_BATCH_SIZE = 64


@dataclass(frozen=True)
class TextEncoderSpec:
    """Model name and weights source of a text tower.

    Attributes:
        model_name: open_clip model config name, e.g. ``ViT-B-16``.
        pretrained: open_clip pretrained tag (``openai``), or ``none`` for random weights.
            Ignored when ``weights_path`` is given.
        weights_path: local open_clip checkpoint (safetensors or a torch state dict) to load
            instead of resolving ``pretrained``.
    """

    model_name: str = DEFAULT_MODEL_NAME
    pretrained: str = DEFAULT_PRETRAINED
    weights_path: str | None = None

    @property
    def is_random(self) -> bool:
        return self.weights_path is None and self.pretrained == RANDOM_PRETRAINED

    def weights_identity(self) -> str:
        """Return a string that changes whenever the tower's weights would change.

        A local file is identified by the SHA-256 of its content, a pretrained tag by its name,
        and the random tower by its seed and the open_clip version whose initialiser draws it.
        Raises HybridcapError when ``weights_path`` does not exist.
        """
        if self.weights_path is not None:
            return f"file-sha256:{_file_sha256(Path(self.weights_path))}"
        if self.is_random:
            open_clip_version = importlib.metadata.version("open_clip_torch")
            return f"random-seed-{RANDOM_INIT_SEED}-open_clip-{open_clip_version}"
        return f"pretrained:{self.pretrained}"

    def describe(self) -> str:
        if self.weights_path is not None:
            return f"{self.model_name} from {self.weights_path}"
        return f"{self.model_name} ({self.pretrained})"


def _file_sha256(path: Path) -> str:
    if not path.is_file():
        raise HybridcapError(f"CLIP weights file not found: {path}; pass an existing file to --clip-weights")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FrozenTextEncoder(nn.Module):
    """An open_clip text tower that cannot be trained, with its tokenizer.

    The tower's parameters have ``requires_grad`` off, the module stays in eval mode even when a
    parent calls ``train()``, and ``embed`` runs without building a graph.

    Attributes:
        tower: the open_clip ``TextTransformer``.
        spec: the spec the tower was built from.
        weights_identity: ``spec.weights_identity()``, the cache key for its weights.
        embedding_dim: size of the output embeddings (512 for ViT-B/16).
    """

    def __init__(self, tower: nn.Module, tokenizer: Any, spec: TextEncoderSpec, weights_identity: str, embedding_dim: int) -> None:
        super().__init__()
        self.tower = tower
        self.tokenizer = tokenizer
        self.spec = spec
        self.weights_identity = weights_identity
        self.embedding_dim = embedding_dim
        self.tower.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        """Keep eval mode whatever ``mode`` is, so dropout never switches on in a frozen tower."""
        return super().train(False)

    @torch.no_grad()
    def embed(self, captions: Sequence[str], batch_size: int = EMBEDDING_BATCH_SIZE) -> torch.Tensor:
        """Return the unnormalised CLIP text embeddings ``(N, embedding_dim)`` of ``captions`` in fp32.

        Each batch is cut to its longest tokenised caption instead of CLIP's 77-token context.
        The tower is causal and pools at the end-of-text token, so the tokens after it never
        influence the result. The shorter sequence only saves time.
        """
        device = next(self.tower.parameters()).device
        outputs = []
        for start in range(0, len(captions), batch_size):
            token_ids = self.tokenizer(list(captions[start : start + batch_size])).to(device)  # (b, 77)
            length = int((token_ids != 0).sum(dim=1).max())
            with _causal_mask_cut_to(self.tower, length):
                outputs.append(self.tower(token_ids[:, :length]).float())  # (b, embedding_dim)
        if not outputs:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(outputs).cpu()  # (N, embedding_dim)


@contextlib.contextmanager
def _causal_mask_cut_to(tower: nn.Module, length: int) -> Iterator[None]:
    # open_clip's TextTransformer keeps a (context, context) causal mask as a buffer and passes it
    # to attention unchanged, so a shorter input needs the matching top-left corner of that mask.
    full_mask = tower.attn_mask
    if full_mask is None:
        yield
        return
    tower.attn_mask = full_mask[:length, :length]
    try:
        yield
    finally:
        tower.attn_mask = full_mask


def load_text_encoder(
    spec: TextEncoderSpec,
    *,
    device: torch.device | str = "cpu",
    hub_cache_dir: str | os.PathLike[str] | None = None,
    hub_endpoint: str | None = None,
) -> FrozenTextEncoder:
    """Build the frozen text tower described by ``spec``.

    Args:
        spec: model name and weights source.
        device: where the tower lives.
        hub_cache_dir: Hugging Face cache folder to look in; huggingface_hub's default when None.
        hub_endpoint: hub URL to probe before a download; huggingface_hub's endpoint when None.

    Raises:
        HybridcapError: unknown model or tag, weights missing and not downloadable (after at
            most a few seconds), or a weights file that does not contain this text tower.
    """
    import open_clip
    from open_clip.model import _build_text_tower

    model_config, checkpoint_path, quick_gelu = _locate_weights(spec, hub_cache_dir, hub_endpoint)
    weights_identity = spec.weights_identity()

    # The random tower must be the same in every run so that its cached embeddings stay valid.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        tower = _build_text_tower(model_config["embed_dim"], model_config["text_cfg"], quick_gelu=quick_gelu)
    if checkpoint_path is not None:
        _load_text_tower_weights(tower, checkpoint_path, spec)

    tokenizer = open_clip.get_tokenizer(spec.model_name)
    encoder = FrozenTextEncoder(tower, tokenizer, spec, weights_identity, int(model_config["embed_dim"]))
    return encoder.to(device)


def check_text_encoder_weights(
    spec: TextEncoderSpec,
    *,
    hub_cache_dir: str | os.PathLike[str] | None = None,
    hub_endpoint: str | None = None,
) -> None:
    """Check the model and tag of ``spec`` and make sure its weights are on disk, downloading them if needed.

    This is what ``load_text_encoder`` does first, without building the tower, so a pipeline can
    fail before its other stages train rather than after them.

    Raises:
        HybridcapError: as ``load_text_encoder`` does for an unknown model or tag or for
            weights that are missing and cannot be downloaded.
    """
    _, checkpoint_path, _ = _locate_weights(spec, hub_cache_dir, hub_endpoint)
    if checkpoint_path is not None and not checkpoint_path.is_file():
        raise HybridcapError(f"CLIP weights file {checkpoint_path} not found; pass an existing --clip-weights file")


def _locate_weights(
    spec: TextEncoderSpec,
    hub_cache_dir: str | os.PathLike[str] | None,
    hub_endpoint: str | None,
) -> tuple[dict[str, Any], Path | None, bool]:
    """Return the open_clip model config, the weights file (None for random weights) and whether the tower uses QuickGELU."""
    import open_clip

    model_config = open_clip.get_model_config(spec.model_name)
    if model_config is None:
        raise HybridcapError(f"unknown open_clip model {spec.model_name!r}; use {DEFAULT_MODEL_NAME}")
    if "hf_model_name" in model_config["text_cfg"]:
        raise HybridcapError(f"open_clip model {spec.model_name!r} has a Hugging Face text tower, which hybridcap does not support; use {DEFAULT_MODEL_NAME}")

    # OpenAI's CLIP weights were trained with QuickGELU, and open_clip records the activation per
    # pretrained tag. The random tower and local files use QuickGELU to match the default weights.
    # NOTE: a local file holding GELU weights (e.g. a LAION tag) would load but embed slightly wrong.
    if spec.weights_path is not None:
        return model_config, Path(spec.weights_path), True
    if spec.is_random:
        return model_config, None, True
    pretrained_config = open_clip.get_pretrained_cfg(spec.model_name, spec.pretrained)
    if not pretrained_config:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.model_name))
        raise HybridcapError(f"unknown CLIP pretrained tag {spec.pretrained!r} for {spec.model_name}; use one of: {tags}, or none")
    quick_gelu = bool(pretrained_config.get("quick_gelu", False))
    return model_config, _resolve_pretrained_file(spec, pretrained_config, hub_cache_dir, hub_endpoint), quick_gelu


def _resolve_pretrained_file(
    spec: TextEncoderSpec,
    pretrained_config: dict[str, Any],
    hub_cache_dir: str | os.PathLike[str] | None,
    hub_endpoint: str | None,
) -> Path:
    """Return the local path of a pretrained tag's weights, downloading them only when the hub responds."""
    import huggingface_hub
    import open_clip

    hub_location = pretrained_config.get("hf_hub", "")
    how_to_fix = (
        f"download open_clip_model.safetensors from the Hugging Face repository {hub_location.rstrip('/') or spec.model_name} "
        "on a machine with internet and pass --clip-weights PATH, or pass --clip-pretrained none for an untrained text encoder"
    )
    if hub_location:
        # open_clip names the repository as "org/name/" (default file) or "org/name/file".
        repository, filename = os.path.split(hub_location)
        candidates = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"] if not filename else [filename]
        for candidate in candidates:
            cached = huggingface_hub.try_to_load_from_cache(repository, candidate, cache_dir=hub_cache_dir)
            if isinstance(cached, str):
                return Path(cached)

    if huggingface_hub.constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise HybridcapError(f"CLIP weights {spec.describe()} are not in the Hugging Face cache and HF_HUB_OFFLINE is set; {how_to_fix}")
    endpoint = hub_endpoint or (huggingface_hub.constants.ENDPOINT if hub_location else pretrained_config.get("url", ""))
    if not _endpoint_answers(endpoint):
        host = urllib.parse.urlsplit(endpoint).netloc or endpoint
        raise HybridcapError(f"CLIP weights {spec.describe()} are not cached and {host} is unreachable; {how_to_fix}")

    try:
        path = open_clip.download_pretrained(pretrained_config, cache_dir=str(hub_cache_dir) if hub_cache_dir else None)
    except Exception as error:  # noqa: BLE001 - open_clip and huggingface_hub raise many unrelated types here.
        raise HybridcapError(f"downloading CLIP weights {spec.describe()} failed ({type(error).__name__}: {error}); {how_to_fix}") from error
    if not path:
        raise HybridcapError(f"open_clip has no download for CLIP weights {spec.describe()}; {how_to_fix}")
    return Path(path)


def _endpoint_answers(url: str, timeout: float = HUB_PROBE_TIMEOUT_SECONDS) -> bool:
    """Return True when ``url`` returns any HTTP response within ``timeout`` seconds.

    urllib follows the proxy environment variables, like the hub client does.
    """
    if not url:
        return False
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _load_text_tower_weights(tower: nn.Module, path: Path, spec: TextEncoderSpec) -> None:
    """Copy the text-tower entries of a full open_clip checkpoint into ``tower``."""
    state_dict = _read_state_dict(path)
    if any(key.startswith("text.") for key in state_dict):
        # CustomTextCLIP checkpoints keep the text tower under "text.", plain CLIP ones at the top level.
        state_dict = {key[len("text."):]: value for key, value in state_dict.items() if key.startswith("text.")}
    expected_keys = set(tower.state_dict())
    missing = sorted(expected_keys - set(state_dict))
    if missing:
        raise HybridcapError(f"{path} does not contain the {spec.model_name} text tower (missing {missing[0]} and {len(missing) - 1} more); pass an open_clip {spec.model_name} checkpoint")
    try:
        tower.load_state_dict({key: state_dict[key] for key in expected_keys}, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise HybridcapError(f"{path} does not match the {spec.model_name} text tower ({first_line}); pass an open_clip {spec.model_name} checkpoint") from error


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise HybridcapError(f"cannot read CLIP weights {path}: {error}") from error
    try:
        # weights_only refuses arbitrary pickled objects, so an untrusted file cannot run code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # A corrupt file makes torch's weights-only unpickler raise almost any exception type
    # (KeyError, IndexError, ValueError, ...), so every Exception means "not a readable checkpoint".
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise HybridcapError(f"cannot read CLIP weights {path} as a state dict ({type(error).__name__}: {first_line}); pass open_clip_model.safetensors or another open_clip state dict") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise HybridcapError(f"{path} is not a state dict; pass open_clip_model.safetensors or another open_clip state dict")
    # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
    return {key.removeprefix("module."): value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


# ---------------------------------------------------------------------------------------------
# Caption embedding cache


@dataclass
class CaptionEmbeddings:
    """Embeddings of a caption list, in the order of that list.

    Attributes:
        embeddings: ``(N, D)`` fp32 unnormalised text embeddings.
        computed: how many captions the text tower embedded now (0 when the cache had them all).
        seconds: time spent building the tower and embedding, 0 on a full cache hit.
    """

    embeddings: torch.Tensor
    computed: int
    seconds: float


def cached_caption_embeddings(
    cache_path: str | os.PathLike[str],
    captions: Sequence[str],
    spec: TextEncoderSpec,
    *,
    text_encoder: FrozenTextEncoder | None = None,
    device: torch.device | str = "cpu",
) -> CaptionEmbeddings:
    """Return the embeddings of ``captions``, embedding only those missing from the cache file.

    The cache is keyed by model name, weights identity and caption text: a file written for
    other weights is ignored and rewritten. The text tower is built only when some caption is
    missing, so a resumed run with a complete cache needs neither the weights nor open_clip's
    startup time.

    Args:
        cache_path: safetensors file in the run folder.
        captions: caption texts; duplicates are embedded once.
        spec: the text tower to use when something is missing.
        text_encoder: an already built tower for ``spec``, used instead of building one.
        device: where a newly built tower runs.
    """
    cache_path = Path(cache_path)
    weights_identity = text_encoder.weights_identity if text_encoder is not None else spec.weights_identity()
    known = _read_cache(cache_path, spec.model_name, weights_identity)
    missing = sorted({caption for caption in captions if caption not in known})

    started = time.perf_counter()
    if missing:
        encoder = text_encoder if text_encoder is not None else load_text_encoder(spec, device=device)
        for caption, embedding in zip(missing, encoder.embed(missing)):
            known[caption] = embedding
        _write_cache(cache_path, spec.model_name, weights_identity, known)
    seconds = time.perf_counter() - started if missing else 0.0

    if not captions:
        return CaptionEmbeddings(torch.empty(0, 0), 0, seconds)
    embeddings = torch.stack([known[caption] for caption in captions])  # (N, D)
    return CaptionEmbeddings(embeddings, len(missing), seconds)


def _read_cache(path: Path, model_name: str, weights_identity: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    try:
        tensors, metadata = load_weights(path)
    except RunFolderError:
        return {}  # a damaged cache is rebuilt, not fatal
    if metadata.get("model_name") != model_name or metadata.get("weights_identity") != weights_identity:
        return {}
    captions = metadata.get("captions")
    embeddings = tensors.get("embeddings")
    if not isinstance(captions, list) or embeddings is None or embeddings.shape[0] != len(captions):
        return {}
    return dict(zip(captions, embeddings.float()))


def _write_cache(path: Path, model_name: str, weights_identity: str, known: dict[str, torch.Tensor]) -> None:
    captions = sorted(known)
    embeddings = torch.stack([known[caption] for caption in captions])  # (N, D)
    metadata = {"model_name": model_name, "weights_identity": weights_identity, "captions": captions}
    save_weights(path, {"embeddings": embeddings}, metadata)

