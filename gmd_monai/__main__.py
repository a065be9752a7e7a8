from gmd_monai.cli import main

main()
