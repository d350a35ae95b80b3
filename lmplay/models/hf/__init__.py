"""Hugging Face transformers interop: train a transformers model, import and export weights.

- `experiments`: `--exp hf:PATH`, a transformers causal LM in a local folder behind lmplay's
  model contract (`HFCausalLM`, `HFExperiment`, `hf_experiment`, `is_hf_exp`).
- `folder`: reading a local transformers folder (config, weight files), refusing what lmplay
  cannot train faithfully.
- `maps`: faithful config and weight maps between lmplay's families and transformers classes.
- `importing`: `--initial-model FOLDER`, a GPT-2 or Llama folder as an lmplay model component.
- `export`: `lmp_export`, an lmplay model written as a transformers folder.
- `tokenizer`: GPT-2 tokenizer files for transformers, built from the bundled BPE ranks.

transformers and safetensors are optional and imported inside functions; importing this
package imports neither (nor its modules, so `--help` stays fast).
"""
