"""Launch: choose a model, task, recipe and settings; check them; start a background run.

Models: the embedded one, a curated chat model, or any folder or hub id. Tasks: the built-in
ones, an uploaded JSONL/CSV file with a column mapping, or a Hugging Face dataset."""

import dataclasses

import streamlit as st

from core import api
from core.config import (
    DEVICES,
    EMBEDDED_MODEL,
    FIELDS,
    PRESETS,
    RECIPE_NAMES,
    help_text,
    widget_limits,
)
from core.data.judging import JUDGES, RATE_JUDGES
from core.recipe_info import RECIPE_INFO
from ui import choices, common, task_source

common.page_setup("Launch")

FORM_FIELDS = ("task", "recipe", "seed", "steps", "prompts_per_step", "group_size", "lr",
               "lora_rank", "kl_beta", "temperature", "eval_every", "eval_prompts",
               "eval_samples", "wr_lambda", "rlsf_beta", "rlsf_threshold", "rlsf_signal",
               "device", "max_new_tokens", "reasoning", "trust_remote_code", "grader",
               "question_field", "answer_field", "dataset_subset", "dataset_split",
               "gradient_checkpointing", "generation_batch_size", "init_from", "judge",
               "judge_fn_rate", "judge_fp_rate", "judge_model", "judge_max_new_tokens")
TASKS = {**choices.task_choices(), **task_source.SOURCES}
MODELS = choices.model_choices()


JUDGE_LABELS = {"exact": "exact (the task's grader)",
                "random-judge": "random judge (unpatterned errors)",
                "shortcut-judge": "shortcut judge (accepts look-alikes)",
                "rlcr-strict": "RLCR's reference checks",
                "llm-judge": "a language model"}


def defaults(preset: str) -> dict:
    values = {f: FIELDS[f].default for f in FORM_FIELDS}
    values.update({k: v for k, v in PRESETS.get(preset, {}).items() if k in values})
    return {f: float(v) if isinstance(FIELDS[f].default, float) else v
            for f, v in values.items()}


def apply_preset() -> None:
    for f, v in defaults(st.session_state["launch_preset"]).items():
        st.session_state[f"launch_{f}"] = v


def number(where, label: str, name: str, **kw: object) -> None:  # where: st or a column
    """A number widget for a RunConfig setting: its help text, and limits from its Bound."""
    where.number_input(label, key=f"launch_{name}", help=help_text(name),
                       **widget_limits(name), **kw)


if "launch_steps" not in st.session_state:  # first visit, or back from another page
    saved = st.session_state.get("saved_launch_form")
    if saved:
        st.session_state.update(saved)
    else:
        st.session_state["launch_preset"] = "quick"
        apply_preset()

st.title(":material/rocket_launch: Launch a run")
st.caption("Every setting is checked before anything starts; the (?) beside a setting says "
           "what it does.")
device = api.detected_device()

st.selectbox("Settings preset", [*PRESETS, "defaults"], key="launch_preset", on_change=apply_preset,
             help="Fills the settings below: quick = 100 steps (minutes), smoke = 4 tiny "
                  "steps (seconds), chat = a starting point for a ~0.5B chat model on a GPU, "
                  "defaults = RunConfig's own defaults.")

st.subheader("What to train")
c1, c2, c3 = st.columns(3)
model_kind = c1.selectbox("Model", list(MODELS), format_func=MODELS.get, key="launch_model_kind",
                          help=help_text("model"))
model = choices.model_for_choice(model_kind)
if model_kind == choices.OTHER_MODEL:
    model = c1.text_input("Model folder or hub id", key="launch_model_path",
                          placeholder="/path/to/model or Qwen/Qwen2.5-0.5B-Instruct").strip()
if model:
    c1.caption(api.model_status(model))
task_kind = c2.selectbox("Task (difficulty)", list(TASKS), format_func=TASKS.get,
                         key="launch_task", help=help_text("task"))
recipe = c3.selectbox("Recipe", RECIPE_NAMES, key="launch_recipe", help=help_text("recipe"))
c3.caption(RECIPE_INFO[recipe].summary)
st.latex(RECIPE_INFO[recipe].formula)

finished = {r.id: r for r in api.runs_to_start_from(api.list_runs(), model)}
st.selectbox("Initial policy", ["", *finished], key="launch_init_from", help=help_text("init_from"),
             format_func=lambda i: "the model itself (a fresh adapter)" if not i
             else f"the end of {common.run_label(finished[i])}")

chosen = task_source.draw(task_kind)  # an upload with its column mapping, or a dataset
task, problems = chosen.task, list(chosen.problems)
if model and model != EMBEDDED_MODEL:
    k1, k2 = st.columns(2)
    k1.toggle("Reasoning before the answer (<think>)", key="launch_reasoning",
              help=help_text("reasoning"))
    k2.toggle("Trust the model's own code", key="launch_trust_remote_code",
              help=help_text("trust_remote_code"))

if recipe == "w-reinforce":
    number(st, "λ (weight on correct samples)", "wr_lambda", step=0.05)
if recipe == "rlsf":
    r1, r2, r3 = st.columns(3)
    number(r1, "DPO β", "rlsf_beta", step=0.05)
    number(r2, "Confidence threshold τ", "rlsf_threshold", step=0.05)
    r3.selectbox("Answer-span confidence", ["disparity", "mean_prob"], key="launch_rlsf_signal",
                 help=help_text("rlsf_signal"))

st.subheader("Reward source")
j1, j2, j3 = st.columns(3)
judge = j1.selectbox("Judge", JUDGES, key="launch_judge", help=help_text("judge"),
                     format_func=JUDGE_LABELS.get)
if judge in RATE_JUDGES:
    number(j2, "False-negative rate", "judge_fn_rate", step=0.05)
if judge == "random-judge":
    number(j3, "False-positive rate", "judge_fp_rate", step=0.05)
if judge == "llm-judge":
    j2.text_input("Judge model (folder or hub id)", key="launch_judge_model",
                  help=help_text("judge_model"), placeholder="Qwen/Qwen2.5-0.5B-Instruct")
    number(j3, "Judge reply tokens", "judge_max_new_tokens", step=64)
if judge != "exact":
    st.caption("The recipe sees the judge's verdict where it would see correctness; the "
               "exact grader's truth is logged beside it every step (the Run page draws both), "
               "and evaluations always report truth.")

st.subheader("Training")
t1, t2, t3, t4 = st.columns(4)
number(t1, "Steps", "steps", step=10)
number(t2, "Prompts per step", "prompts_per_step")
number(t3, "G (group size)", "group_size")
number(t4, "Seed", "seed")
number(t1, "Learning rate", "lr", step=1e-4, format="%.1e")
number(t2, "LoRA rank", "lora_rank")
number(t3, "KL β", "kl_beta", step=0.01, format="%.3f")
number(t4, "Temperature", "temperature", step=0.1)
number(t1, "Max new tokens", "max_new_tokens", step=32)

st.subheader("Evaluation")
e1, e2, e3, e4 = st.columns(4)
number(e1, "Evaluate every (steps)", "eval_every")
number(e2, "Eval prompts", "eval_prompts")
number(e3, "n (samples per prompt)", "eval_samples")
pass_k_text = e4.text_input("Pass@k values", key="launch_pass_k", placeholder="1, 2, 4, … ≤ n",
                            help=help_text("pass_k"))

st.subheader("Machine")
g1, g2, g3 = st.columns(3)
g1.radio("Device", DEVICES, key="launch_device", horizontal=True, help=help_text("device"))
number(g2, "Generation batch size (rows; 0 = all)", "generation_batch_size", step=8)
g3.toggle("Gradient checkpointing", key="launch_gradient_checkpointing",
          help=help_text("gradient_checkpointing"))


@st.fragment(run_every=1.0 if device.pending else None)
def detected() -> None:
    """What auto will use; while the probe runs, poll until it answers, then rerun once."""
    now = api.detected_device()
    if device.pending and not now.pending:
        st.rerun()
    st.caption(f"Detected: {now.describe()}" + (f" → auto uses **{now.auto}**"
                                                if now.known else ""))


detected()

values = {f: st.session_state.get(f"launch_{f}", FIELDS[f].default) for f in FORM_FIELDS}
values["model"], values["task"] = model, task
# A setting the chosen judge does not read is recorded at its default, not a stale value.
for name, used in (("judge_fn_rate", judge in RATE_JUDGES),
                   ("judge_fp_rate", judge == "random-judge"),
                   ("judge_model", judge == "llm-judge")):
    if not used:
        values[name] = FIELDS[name].default
try:
    values["pass_k"] = tuple(int(k) for k in pass_k_text.replace(" ", "").split(",") if k)
except ValueError:
    problems.append(f"Pass@k values must be whole numbers separated by commas, got "
                    f"{pass_k_text!r}")
if not model:
    problems.append("give a model folder or hub id, or choose the embedded model")
config = None
if not problems:
    config, problems = api.check_config(values, device=device)

st.session_state["saved_launch_form"] = {k: v for k, v in st.session_state.items()
                                         if k.startswith("launch_")
                                         and k not in ("launch_go", "launch_upload")}
st.divider()
runs = api.list_runs()
if problems:
    st.error("Fix these before launching:\n\n" + "\n".join(f"- {p}" for p in problems))
else:
    est = api.estimate(config, runs)
    mem = api.memory_estimate(config, device)
    data = api.task_summary(config)
    st.info(f"Estimated run time alone on this machine: {common.fmt_estimate(est)}.  \n"
            f"{config.steps} steps of {config.prompts_per_step} "
            f"prompts × G = {config.group_size}; {config.n_evals} evaluations of "
            f"{config.eval_prompts} prompts × n = {config.eval_samples}.  \nMemory: "
            + (f"**{mem.describe()}**." if mem else "unknown until the model is downloaded.")
            + (f"  \nData: {data}." if data else ""))
    if config.judge == "llm-judge":
        judged = api.judge_estimate(config)
        per_step = (f"up to about {common.fmt_duration(judged[1])} per step on this CPU "
                    f"({judged[0] / 1e6:.0f} M parameters; measured: a 0.5B model writes "
                    "about 48 tokens/s here), "
                    f"{common.fmt_duration(judged[1] * config.steps)} over the run"
                    if judged else "its size is unknown until it is downloaded")
        st.warning(f"The judge writes up to {config.judge_max_new_tokens} tokens for each of "
                   f"the {config.prompts_per_step * config.group_size} completions of a step: "
                   f"{per_step}. A real judge (0.5B and up) needs a GPU or patience; the "
                   "tiny test models only check the plumbing.")
    if model != EMBEDDED_MODEL and config.max_new_tokens < 64:
        st.warning(f"Max new tokens is {config.max_new_tokens}: too short for a chat model's "
                   "<answer> and <confidence> tags. Start from the chat preset or raise it.")
queue = api.queue_state(runs)
if queue.running >= queue.cap:
    st.warning(f"{queue.running} of {queue.cap} runs are training now, {len(queue.line)} "
               "waiting: a new run waits in the queue and starts by itself.")
if st.button("Launch", type="primary", disabled=bool(problems), key="launch_go"):
    try:
        run_id = api.launch(config, user=common.user())
    except Exception as e:  # the runner's own checks, a full disk: plain words, no traceback
        st.error(f"Could not start the run: {e}")
    else:
        common.open_run(run_id)
with st.expander("All settings of this run (config.json)"):
    st.json(dataclasses.asdict(config) if config else {"problems": problems}, expanded=False)
