"""``python -m intvae.evaluate``: the evaluation app, ``intvae.app.evaluate`` (also
``intvae-evaluate``)."""

from intvae.app.evaluate import main

if __name__ == "__main__":
    main()
