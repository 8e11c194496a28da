"""When: campaign and reminder flows (Prefect), thin over the plain functions of ``flows.engine``.

    spec.py      campaign specs, checked with file and field
    run.py       a run: its lease, its summary
    batch.py     select → decide → render → claim, a batch at a time
    delivery.py  send the claimed touches and record each outcome
    workers.py   batches in several processes
    engine.py    run_campaign: the stages chained, without Prefect
    campaign.py  the Prefect flows
"""
