"""From a workflow config to the work it implies: table cells, resolved method settings, artifact paths, checks,
resources and costs. The Snakefile and the tests both use this, so the paths rules write and the paths jobs ask
for agree. Rooms, each importing only those above it here: paths, settings, studies, targets, checks, timing,
cost, resources; __main__ is the command line."""
from distillery.plan.checks import check_config, check_nas
from distillery.plan.cost import MODELLED_RULES
from distillery.plan.paths import PATHS, config_name, parse_expert_path, shown_path
from distillery.plan.resources import check_group_fits, expert_group_resources, expert_groups, rule_resources
from distillery.plan.settings import (CONFIG_FILES, DEFAULT_MODELS, EXTERNAL, SCHEMA, check_schema, default_model,
                                      eval_config, eval_seeds, expert_overrides, expert_seeds, external_settings,
                                      load_config, load_yaml, logged_method_pattern, merge, method_protocol,
                                      resolve_method, type_cli_values)
from distillery.plan.studies import (nas_architectures, nas_eval_config, nas_results, nas_settings, nas_spec,
                                     nas_synset, stability_settings, stability_spec, stability_trials)
from distillery.plan.targets import (Cell, distillations, expert_dir, expert_files, expert_set_files, expert_sets,
                                     figure_sources, group_files, initial_share_line, initial_share_warnings,
                                     table_cells, table_notes, table_sources, table_spec)

__all__ = ["CONFIG_FILES", "DEFAULT_MODELS", "EXTERNAL", "MODELLED_RULES", "PATHS", "SCHEMA", "Cell", "check_config",
           "check_group_fits", "check_nas", "check_schema", "config_name", "default_model", "distillations",
           "eval_config", "eval_seeds", "expert_dir", "expert_files", "expert_group_resources", "expert_groups",
           "expert_overrides", "expert_seeds", "expert_set_files", "expert_sets", "external_settings", "figure_sources",
           "group_files", "initial_share_line", "initial_share_warnings", "load_config", "load_yaml",
           "logged_method_pattern", "merge", "method_protocol", "nas_architectures", "nas_eval_config", "nas_results",
           "nas_settings", "nas_spec", "nas_synset", "parse_expert_path", "resolve_method", "rule_resources", "shown_path",
           "stability_settings", "stability_spec", "stability_trials", "table_cells", "table_notes", "table_sources",
           "table_spec", "type_cli_values"]
