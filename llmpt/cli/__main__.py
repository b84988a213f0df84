from llmpt.cli.main import main

main()
