"""Constants shared across packages."""

IGNORE_INDEX = -100  # label value PyTorch's cross-entropy skips: prompt and padding tokens

TRAINER_LOG = "trainer_log.jsonl"
RUN_ARGS_FILE = "run_args.yaml"
LOSS_PLOT = "training_loss.png"

# The data-platform project's task-tagged prompt (registry key "task_tag"): one adapter learns several tasks and
# is told which one each prompt asks for. Training (data/converters.py) and `llmtuner test` both build it.
TASK_PROMPT = "任务: {task}\n输入: {input}"

# The attention implementation that runs sdpa once per sample of a packed row (model/packed_attention.py); named
# here because the collator (data/) chooses the batch layout from it and data/ never imports model/.
PACKED_SDPA_ATTENTION = "llmtuner_packed_sdpa"
