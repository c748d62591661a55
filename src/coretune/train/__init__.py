"""Fine-tune a causal LM on (prompt, target) rows: one readable loop in the nanoGPT manner.

- Loss on the target tokens and EOS only (prompt tokens are labelled -100), and logits only
  there (`loss.py`). Prompt and target are joined as in evaluation
  (`coretune.models.encode_prompt` / `encode_target`); a chat row through the model's chat
  template where it has one (`coretune.models.encode_chat`).
- Too long: the prompt loses tokens on its LEFT (the question usually sits at its end).
- AdamW, linear warmup then linear decay, gradient clipping at 1.0; `batch_size` x
  `grad_accum` rows per optimizer step, the loss normalised by the target tokens of the whole
  step. Memory: `micro_batch_size` rows per forward/backward pass (the step and its loss stay
  the same) and `gradient_checkpointing`. Speed: `pass_tokens` (passes of at most that many
  tokens instead of a row count) and `packing` (a pass's rows in one sequence, no padding);
  again the same rows, loss and gradients per step, up to float rounding.
- Full fine-tuning or LoRA (peft). float32 weights; the passes under bfloat16 autocast on a
  GPU and on a CPU with native bf16 (`precision`), float32 on other CPUs; AdamW's fused
  kernel on a GPU.
- Checkpoints every `save_every` steps into `<output>.partial/` (`checkpoint.py`), each
  with the sha256 of its files; running the same command again resumes from the newest
  intact one (a damaged one is passed over with a warning), and a finished run is not
  redone. The output folder appears only whole, when training is done. Data order depends
  only on seed and epoch, so a resumed run sees the same batches as an uninterrupted one.

Modules: `data` (settings, rows, batches, order), `loss`, `checkpoint`, `loop` (`train()`:
setup, the step loop, finishing).
"""

from coretune.train.data import IGNORE, TrainConfig, encode_example, epoch_order, load_rows
from coretune.train.loop import train

__all__ = ["IGNORE", "TrainConfig", "encode_example", "epoch_order", "load_rows", "train"]
