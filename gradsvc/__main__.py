"""`python -m gradsvc` is the `gradsvc` command."""
from .cli import main

if __name__ == "__main__":
    main()
