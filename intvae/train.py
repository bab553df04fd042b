"""``python -m intvae.train``: the training app, ``intvae.app.train`` (also ``intvae-train``)."""

from intvae.app.train import main

if __name__ == "__main__":
    main()
