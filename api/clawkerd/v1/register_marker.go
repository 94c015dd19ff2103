package clawkerdv1

// RegisterAssertionSpent starts RegisterDone.error when clawkerd was asked
// to Register again after it had exchanged (and removed) its one-time
// assertion and its token had expired: only a recreated agent can
// register. The CP reports it as the advisory register_assertion_spent.
const RegisterAssertionSpent = "assertion_spent:"
