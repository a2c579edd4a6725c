"""Deployment across organisations: one party per organisation, each under its own policy.

Responsibility: the party service (`mpc party serve`), the dealer service (`mpc dealer serve`),
local policies, agreed programs (by SHA-256), the run agreement and the encrypted, key-pinned
control channel between them. The single-cluster `mpc.Session` serves one trust domain only.
Security model: nothing of Ray crosses an organisation's boundary; between organisations travel
only the encrypted TCP data plane (party to party) and the encrypted control channel (starter to
party, party to party, party to dealer), each authenticated with keys pinned in the receiving
side's own policy (docs/deploy.md, docs/security.md).
"""
