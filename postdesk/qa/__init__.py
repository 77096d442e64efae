"""QA: sampling solved tickets, scorecards, the scoring session, reviews, reviewer
agreement, reports and KPIs.

A layer beside ingest, classify and notify: it reads tickets (postdesk.models,
postdesk.tickets) and writes only its own tables (postdesk/models/qa.py); it never
imports ingest, classify or notify.

- `scorecard`: scorecard TOML files, their versions (content hash), the default scorecard.
- `scoring`: criterion and review scores, the IQS (Hájek-weighted, with its interval).
- `sampling`: sampling designs with exact inclusion probabilities (pure).
- `risk`: the risk factors of risk-weighted samples.
- `frame`: which tickets a sample may draw.
- `samples`: `qa sample`: draw, assign reviewers, store.
- `store`: the QA tables: scorecard versions, samples, reviews one answer at a time.
- `imports`: `qa import-reviews` (CSV).
- `agreement`: `qa agreement`: percent agreement, Krippendorff's alpha, Cohen's kappa.
- `report`: `qa report`: the IQS per agent, category, criterion and week; root causes.
- `charts`: the PNG chart of `qa report --plot` (matplotlib, Persian labels shaped).
- `transcript`: a ticket as the reviewer reads it (blind mode, Persian), pure.
- `session`: one review answered one key at a time (a state machine), pure.
- `score`: `qa score`: the reviewer's queue, resume, saving each answer.
- `terminal`: the prompt_toolkit terminal of `qa score`.
- `cli`: the `postdesk qa` commands.
"""
