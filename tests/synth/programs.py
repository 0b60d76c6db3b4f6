"""One small valid program per recipe language, and a broken copy of it (a dropped closing bracket or quote),
for the syntax and post-processing tests."""

VALID = {
    "python": "def area(w, h):\n    \"\"\"Rectangle area.\"\"\"\n    return w * h\n\n\nprint(area(2, 3))\n",
    "jupyter": "import math\n\nradius = 2.0\nprint(math.pi * radius ** 2)\n",
    "java": "public class Area {\n    static int area(int w, int h) {\n        return w * h;\n    }\n\n"
            "    public static void main(String[] args) {\n        System.out.println(area(2, 3));\n    }\n}\n",
    "cpp": "#include <iostream>\n\nint area(int w, int h) {\n    return w * h;\n}\n\nint main() {\n"
           "    std::cout << area(2, 3) << std::endl;\n    return 0;\n}\n",
    "c": "#include <stdio.h>\n\nint area(int w, int h) {\n    return w * h;\n}\n\nint main(void) {\n"
         "    printf(\"%d\\n\", area(2, 3));\n    return 0;\n}\n",
    "javascript": "function area(w, h) {\n  return w * h;\n}\n\nconsole.log(area(2, 3));\n",
    "typescript": "function area(w: number, h: number): number {\n  return w * h;\n}\n\nconsole.log(area(2, 3));\n",
    "php": "<?php\nfunction area($w, $h) {\n    return $w * $h;\n}\n\necho area(2, 3);\n",
    "csharp": "using System;\n\nclass Area {\n    static int Compute(int w, int h) {\n        return w * h;\n    }\n\n"
              "    static void Main() {\n        Console.WriteLine(Compute(2, 3));\n    }\n}\n",
    "go": "package main\n\nimport \"fmt\"\n\nfunc area(w, h int) int {\n\treturn w * h\n}\n\nfunc main() {\n"
          "\tfmt.Println(area(2, 3))\n}\n",
    "sql": "CREATE TABLE boxes (id INTEGER PRIMARY KEY, w INTEGER, h INTEGER);\n\n"
           "INSERT INTO boxes (w, h) VALUES (2, 3);\n"
           "SELECT id, w * h AS area FROM boxes WHERE w > 0 ORDER BY area DESC;\n",
    "ruby": "def area(w, h)\n  w * h\nend\n\nputs area(2, 3)\n",
    "rust": "fn area(w: u32, h: u32) -> u32 {\n    w * h\n}\n\nfn main() {\n    println!(\"{}\", area(2, 3));\n}\n",
    "scala": "object Area {\n  def area(w: Int, h: Int): Int = w * h\n\n  def main(args: Array[String]): Unit = {\n"
             "    println(area(2, 3))\n  }\n}\n",
    "kotlin": "fun area(w: Int, h: Int): Int {\n    return w * h\n}\n\nfun main() {\n    println(area(2, 3))\n}\n",
    "shell": "#!/bin/bash\narea() {\n  echo $(( $1 * $2 ))\n}\n\narea 2 3\n",
    "dart": "int area(int w, int h) {\n  return w * h;\n}\n\nvoid main() {\n  print(area(2, 3));\n}\n",
    "swift": "func area(_ w: Int, _ h: Int) -> Int {\n    return w * h\n}\n\nprint(area(2, 3))\n",
}

BROKEN = {
    "python": "def area(w, h:\n    return w * h\n",
    "jupyter": "import math\nprint(math.pi * (2.0 ** 2)\n",
    "java": "public class Area {\n    static int area(int w, int h) {\n        return w * h;\n\n",
    "cpp": "int area(int w, int h) {\n    return w * h;\n\nint main() {\n    return area(2, 3;\n}\n",
    "c": "int area(int w, int h) {\n    return w * h;\n\nint main(void) {\n    return area(2, 3;\n}\n",
    "javascript": "function area(w, h) {\n  return w * h;\n\nconsole.log(area(2, 3);\n",
    "typescript": "function area(w: number, h: number): number {\n  return w * h;\n\nconsole.log(area(2, 3);\n",
    "php": "<?php\nfunction area($w, $h) {\n    return $w * $h;\n\necho area(2, 3;\n",
    "csharp": "class Area {\n    static int Compute(int w, int h) {\n        return w * h;\n\n",
    "go": "package main\n\nfunc area(w, h int) int {\n\treturn w * h\n\nfunc main() {\n\tarea(2, 3\n}\n",
    "sql": "SELECT id, w * h AS area FROM boxes WHERE (w > 0 ORDER BY area DESC;\n",
    "ruby": "def area(w, h)\n  w * (h\nend\n\nputs area(2, 3)\n",
    "rust": "fn area(w: u32, h: u32) -> u32 {\n    w * h\n\nfn main() {\n    println!(\"{}\", area(2, 3));\n}\n",
    "scala": "object Area {\n  def area(w: Int, h: Int): Int = w * (h\n}\n",
    "kotlin": "fun area(w: Int, h: Int): Int {\n    return w * (h\n}\n",
    "shell": "area() {\n  echo $(( $1 * $2 ))\n\narea 2 3\n",
    "dart": "int area(int w, int h) {\n  return w * (h;\n}\n",
    "swift": "func area(_ w: Int, _ h: Int) -> Int {\n    return w * (h\n}\n",
}

# a valid file of two non-blank lines per recipe language: too short to keep (postprocess.min_lines, default 3)
SHORT = {
    "python": "import math\nprint(math.pi)\n",
    "jupyter": "import math\nprint(math.pi)\n",
    "java": "class Area {\n}\n",
    "cpp": "#include <cstdio>\nint main() { return 0; }\n",
    "c": "#include <stdio.h>\nint main(void) { return 0; }\n",
    "javascript": "const a = 1;\nconsole.log(a);\n",
    "typescript": "const a: number = 1;\nconsole.log(a);\n",
    "php": "<?php\necho 1;\n",
    "csharp": "using System;\nclass Area { }\n",
    "go": "package main\nfunc main() {}\n",
    "sql": "SELECT 1;\nSELECT 2;\n",
    "ruby": "x = 1\nputs x\n",
    "rust": "fn main() {\n}\n",
    "scala": "object Area {\n}\n",
    "kotlin": "fun main() {\n}\n",
    "shell": "#!/bin/bash\necho hi\n",
    "dart": "void main() {\n}\n",
    "swift": "let a = 1\nprint(a)\n",
}
