"""Every closed choice of the library and the workflow config, written once.

The code checks values against these tuples and tests/test_architecture.py checks that each `enum:` of
workflow/schemas/config.schema.yaml (and each closed wildcard of workflow/rules/common.smk) is one of them.
"""

# Distillation (distill/config.py validates a DistillConfig against these).
KINDS = ("coreset", "trajectory", "adversarial", "merged")
INITS = ("real", "noise", "representative", "correct")
REPRESENTATIVES = ("features", "logits")  # what representative init clusters: the paper's reading | AST's code
PERTURBS = ("none", "gaussian", "filter", "weight")
SELECTS = ("random", "herding", "forgetting", "kmeans")
INTERMEDIATES = ("none", "equal", "varied")
SPACINGS = ("multiple", "floor")
MATCHES = ("fixed", "adaptive")
DISTANCES = ("l2", "l1")
DISAGREEMENTS = ("l1", "l2", "cosine")
APM_SUBSETS = ("iteration", "refresh")
MEMORIES = ("full", "recompute", "constant")
AUTO = "auto"                             # the planner's memory setting, resolved to one of MEMORIES
MEMORY_SETTINGS = (AUTO, *MEMORIES)       # what a method's `memory:` may say
EXACT_MEMORIES = ("full", "recompute")    # what `memory: auto` chooses from (constant is first order)
LOGGED_KINDS = ("trajectory", "adversarial")  # kinds whose distillation writes a per-iteration log
FEATURE_SELECTS = ("herding", "kmeans")   # coreset selections that embed the training split with expert 0

# Evaluation: the loss on soft labels (evaluate.EvalConfig.soft_loss): APM's L1 on logits, DATM's soft cross-entropy.
SOFT_LOSSES = ("l1", "soft_ce")
# Evaluation: how the lr decays (evaluate.EvalConfig.schedule): a new optimizer after epoch E//2+1 (MTT's
# evaluate_synset) or MultiStepLR from epoch E//2+1 with the same optimizer (APM's evaluate_synset_mc).
EVAL_SCHEDULES = ("rebuild", "multistep")

# Expert sets: their normalisation, named in paths and DVC stages.
NORMS = ("zca", "std")

# Tables: what a cell reports and the figures a table may draw.
SCORE_MEASURES = ("lrs", "hlr", "ior", "ars")     # DD-Ranking's scores, from several evaluations (report/scores.py)
MEASURES = ("accuracy", "expert_accuracy", "avg_var", "seconds_per_iteration", *SCORE_MEASURES)
EXPERT_MEASURES = ("expert_accuracy", "avg_var")  # read from the experts' stats.json: no distillation needed
# How an accuracy cell's number is chosen (report/selection.py): the final set; the snapshot and protocol choice
# with the best held-out validation accuracy; the best test accuracy, as the papers chose (shown labelled so).
SELECTION_RULES = ("final", "validation", "test")
FIGURES = ("accuracy_vs_ipc", "cross_arch", "smoothness", "match_steps")
SOURCE_FIGURES = ("smoothness", "match_steps")    # figures that read files besides the table's CSV

# Studies: the parameters a stability study multiplies, the spaces a NAS study searches.
STABILITY_PARAMETERS = ("lr_img", "lr_lr")
NAS_SPACES = ("convnet", "bench201")

# Run time: TF32 modes (runtime.tf32) and the device classes of the time model.
TF32_MODES = ("all", "conv", "none")
DEVICE_CLASSES = ("cpu", "gpu")
