"""The standard pass list of `dgq compile`, in order."""
from __future__ import annotations

from passes.base import Pass
from passes.block_axis_quantizers import BlockAxisQuantizers
from passes.check_recipe import CheckRecipe
from passes.fold_attention_scale import FoldAttentionScale
from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_fusion_barriers import InsertFusionBarriers
from passes.insert_step_index import InsertStepIndex
from passes.propagate_timestep_nan import PropagateTimestepNan
from passes.quantize_attention_probs import QuantizeAttentionProbs
from passes.quantize_text_embedding import QuantizeTextEmbedding
from passes.quantize_weights import QuantizeWeights
from passes.split_cross_attention import SplitCrossAttention
from passes.write_encodings import WriteEncodings


def compile_passes() -> list[Pass]:
    return [CheckRecipe(), FoldAttentionScale(), InsertStepIndex(), QuantizeWeights(), InsertActivationQdq(),
            QuantizeTextEmbedding(), QuantizeAttentionProbs(), SplitCrossAttention(), InsertFusionBarriers(),
            BlockAxisQuantizers(), PropagateTimestepNan(), WriteEncodings()]
