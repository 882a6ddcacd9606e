from pyimage.cli import main

main()
