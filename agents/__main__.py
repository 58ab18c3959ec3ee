"""`python -m agents` runs the CLI."""

from agents.cli import main

if __name__ == "__main__":
    main()
