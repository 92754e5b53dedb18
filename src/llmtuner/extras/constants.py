"""Constants shared across packages."""

IGNORE_INDEX = -100  # label value PyTorch's cross-entropy skips: prompt and padding tokens

TRAINER_LOG = "trainer_log.jsonl"
RUN_ARGS_FILE = "run_args.yaml"
LOSS_PLOT = "training_loss.png"
