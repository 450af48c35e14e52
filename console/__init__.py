"""The team lead's console: a local web page to classify text, watch the routed stream and correct intents.

An optional extra (`pip install 'inquiry-triage[console]'`); it runs beside the service, never inside it: it reads
the routing topics with a consumer of its own (no group, from the end) and scrapes the service's /metrics.
"""
