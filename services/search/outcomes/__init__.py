"""Online outcomes of the A/B experiments: what each search showed (exposures), what users did with it (feedback
events), and the per-experiment report built from both (`mmsearch ab report`)."""
