# actspace: a gated research plan on language-model activations.
#
#   snakemake --cores all            run the default study (built-in organisms, offline, minutes)
#   snakemake -n                     preview the decision path
#   snakemake --configfile config/paper.yaml --cores all    the full study on Hugging Face models
#
# A --configfile replaces the default study (config/config.yaml), it is not merged with it;
# --config overrides merge on top of whichever file is used.
#
# The plan, the decision table and the layout are described in README.md.

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from actspace.core.schema import ConfigError, check_config_file

min_version("9.21.1")

#: The default study, used only when no --configfile is given on the command line.
DEFAULT_CONFIGFILE = "config/config.yaml"

# Read each configuration file strictly first (a key given twice, a YAML syntax error: one line
# with the file and the line); Snakemake's own reading keeps the last of two keys silently.
try:
    for _path in workflow.overwrite_configfiles or [DEFAULT_CONFIGFILE]:
        check_config_file(_path)
except ConfigError as error:
    raise WorkflowError(f"configuration refused before any job ran: {error}") from None

if not workflow.overwrite_configfiles:

    configfile: DEFAULT_CONFIGFILE


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
