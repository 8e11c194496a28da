"""The ledger: the only writer of the contact history, and the rules it is written by.

It writes ``touches``, ``touch_events``, ``contact_locks``, ``consents``, contact-point status,
``suppressions``, ``bounces``, ``call_tasks``, ``reassignments``, ``campaign_runs``, ``journey_states``,
``access_log`` and ``engagements``; everyone else calls it with plain data.

    policy.py      the contact policy as pure decisions over frozen data; every "no" has a reason
    arbitration.py which locks a claim needs and why one is refused: gap, offer group, priority (pure)
    claims.py      candidates, and claiming touches under the person's unique locks
    budget.py      a campaign's spend (the sum of its touches' costs) and the claims that still fit in its budget
    responses.py   how persons answered touches per channel (replies, purchases after): what channels: auto ranks by
    touches.py     writing touches and decisions, each with its first event
    inbound.py     what people write back: inbound touches linked to the touch they answer
    replies.py     answers to what people write (the bot's): claimed once per message, never after an opt-out
    moves.py       status moves: forward only, reported back, each an event
    runs.py        campaign runs: leases, and settling the touches of runs that died
    consents.py    the consent ledger: a person's word, for every record of the person
    contacts.py    whether an address may be used, on every record holding it; suppressions
    verdicts.py    what a provider said about an address: bounce, block, opt-out
    bounces.py     reports that come back after the send: the touch failed, the address bounced (hard) or counted (soft)
    calls.py       call tasks for reps, the outcomes of calls, and reassignments when a rep leaves
    access.py      the access log: who viewed, exported or erased whose data
    journeys.py    each person's place in a journey, leased by one runner at a time
    engagement.py  opens and clicks of emails (their own table, not events), and the results per campaign
    history.py     reading the history
    compliance.py  the history checked against the rules
    audit/         hash chains, keyed seals and anchors: proof that the history was not edited
"""
