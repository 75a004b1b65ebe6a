"""Demo corpora shipped through PyPI packages: loaders that write them out as raw files for `preprocess`.

The data stays in those packages (zaragoza-construction-faq, chatterbot-corpus, scikit-image); nothing is
copied into this repository.
"""
