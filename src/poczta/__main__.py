"""`python -m poczta`: the command line."""

from poczta.cli import main

if __name__ == "__main__":
    main()
