"""Limits of command-line options that more than one command shares."""

# The vocabulary has about 150 tokens, so wider beams only cost time: at beam 5,000, 20 images
# took 21 s on a 2-core CPU against 0.1 s at beam 3.
MAX_BEAM_WIDTH = 1000
