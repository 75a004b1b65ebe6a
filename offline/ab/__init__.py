"""`mmsearch ab report`: online outcomes per A/B experiment (CTR with intervals, differences, the SRM check), read
from the exposures and events the search service records (mmsearch/outcomes_schema.py); an offline tool, as
`mmsearch eval` is."""
