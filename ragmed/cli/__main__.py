from ragmed.cli import main

main()
