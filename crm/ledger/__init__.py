"""The ledger: the only writer of the contact history, and the rules it is written by.

It writes ``touches``, ``touch_events``, ``contact_locks``, ``consents``, contact-point status,
``suppressions``, ``bounces``, ``call_tasks``, ``reassignments``, ``campaign_runs``, ``journey_states`` and
``access_log``; everyone else calls it with plain data.

    policy.py      the contact policy as pure decisions over frozen data; every "no" has a reason
    arbitration.py which locks a claim needs and why one is refused: gap, offer group, priority (pure)
    claims.py      candidates, and claiming touches under the person's unique locks
    touches.py     writing touches and decisions, each with its first event
    inbound.py     what people write back: inbound touches linked to the touch they answer
    moves.py       status moves: forward only, reported back, each an event
    runs.py        campaign runs: leases, and settling the touches of runs that died
    consents.py    the consent ledger: a person's word, for every record of the person
    contacts.py    whether an address may be used, on every record holding it; suppressions
    verdicts.py    what a provider said about an address: bounce, block, opt-out
    bounces.py     reports that come back after the send: the touch failed, the address bounced (hard) or counted (soft)
    calls.py       call tasks for reps, the outcomes of calls, and reassignments when a rep leaves
    access.py      the access log: who viewed, exported or erased whose data
    journeys.py    each person's place in a journey, leased by one runner at a time
    history.py     reading the history
    compliance.py  the history checked against the rules
    audit/         hash chains, keyed seals and anchors: proof that the history was not edited
"""
