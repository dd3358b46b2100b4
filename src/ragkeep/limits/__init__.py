"""Quotas, in one place: what a user may store and upload (:mod:`.storage`) and how many requests
they may make (:mod:`.rates`).

Every function takes its connection and its ``LimitsConfig`` from the caller: the API passes the
server's settings, code that passes none (benchmarks) is unlimited. Refusals are
:class:`ragkeep.errors.LimitExceeded` (QuotaExceeded, UploadTooLarge, RateLimited); the API maps
them to 403, 413 and 429. This package imports only ``db``, ``config``, ``text`` and ``errors``.
"""
