"""An exported config.json is what transformers' save_pretrained writes for the same values (no defaults such as
id2label or return_dict), plus the top-level rope_theta older readers need; GGUF float32 metadata keeps its
written value (rms_norm_eps 1e-05, not 9.999999747378752e-06)."""
import json
import os

import numpy as np

from megasnow.convert.gguf import float32_as_written


def test_exported_config_json_is_what_save_pretrained_writes(tmp_path, tiny_hf):
    from transformers import LlamaConfig

    ours = json.loads(open(os.path.join(tiny_hf, "config.json")).read())
    config = LlamaConfig(**{k: v for k, v in ours.items() if k not in ("architectures", "dtype", "rope_theta",
                                                                       "transformers_version")})
    config.architectures, config.dtype = ["LlamaForCausalLM"], "float32"
    config.save_pretrained(tmp_path)
    theirs = json.loads(open(tmp_path / "config.json").read())
    assert {k: v for k, v in ours.items() if k != "rope_theta"} == theirs
    assert ours["rope_theta"] == theirs["rope_parameters"]["rope_theta"]
    assert not {"_name_or_path", "id2label", "return_dict", "torch_dtype", "problem_type"} & set(ours)


def test_gguf_float32_metadata_keeps_its_written_value():
    assert float32_as_written(float(np.float32(1e-5))) == 1e-05
    assert float32_as_written(float(np.float32(1e-6))) == 1e-06
    assert float32_as_written(float(np.float32(100000.0))) == 100000.0
    assert float32_as_written(0.1) == 0.1  # not a float32 value: unchanged


def test_gguf_heartbeat_names_the_phase_of_transformers_read():
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from megasnow.convert.gguf import counted_dequantization

    original, phase, seen = gguf_utils.tqdm, ["reading"], []
    with counted_dequantization(phase):
        for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            seen.append(phase[0])
        assert phase[0] == "building the model from the 3 dequantized tensors"
    assert seen == [f"dequantizing tensors ({i}/3 done)" for i in range(3)]
    assert gguf_utils.tqdm is original  # put back
