# actspace: a gated research plan on language-model activations.
#
#   snakemake --cores all            run the default study (built-in organisms, offline, minutes)
#   snakemake -n                     preview the decision path
#   snakemake --configfile config/paper.yaml --cores all    the full study on Hugging Face models
#
# The plan, the decision table and the layout are described in README.md.

from snakemake.utils import min_version

min_version("9.21.1")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/premortems.smk"
include: "workflow/rules/gate.smk"
include: "workflow/rules/cross_model.smk"
include: "workflow/rules/error_prediction.smk"
include: "workflow/rules/patching.smk"
include: "workflow/rules/abort.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/paper.smk"


rule all:
    input:
        "results/gate/decision.json",
        "results/gate/decision.md",
        branch_targets,
        "results/summary.md",
        paper_targets,
        tracking_targets,
    default_target: True
