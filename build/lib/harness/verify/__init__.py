"""Did every acknowledged write survive: the guest-side steps, the fast and reboot verifiers,
and the oracles that judge their reports."""
