"""Building the Windows bundle on Linux: Windows CPython, its wheels, and Wine to run them."""
